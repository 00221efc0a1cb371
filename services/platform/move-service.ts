import type { ServiceImpl } from "@connectrpc/connect";
import { MoveMode } from "../../gen/tenantry/platform/v1/move_pb.js";
import { MoveService } from "../../gen/tenantry/platform/v1/move_service_pb.js";
import type { AuditLog } from "./audit-log.ts";
import type { TenantMoves } from "./moves/index.ts";
import { moveMessage } from "./tenant-messages.ts";

export { MoveService };

/** `tenantry.platform.v1.MoveService` over the moves; MoveTenant is audited, as is each step of a move. */
export function moveService(moves: TenantMoves, audit: AuditLog): ServiceImpl<typeof MoveService> {
  return {
    async moveTenant(req, ctx) {
      const detail = { targetCluster: req.targetCluster, mode: MoveMode[req.mode], compareDigests: req.compareDigests };
      const move = await audit.audited(ctx, req.tenantId, detail, () =>
        moves.move({ tenantId: req.tenantId, targetCluster: req.targetCluster, mode: req.mode === MoveMode.UNSPECIFIED ? MoveMode.AUTO : req.mode, compareDigests: req.compareDigests }),
      );
      return { move: moveMessage(move) };
    },
    async getMove(req) {
      return { move: moveMessage(await moves.get(req.moveId)) };
    },
    async listMoves(req) {
      const page = await moves.list(req);
      return { moves: page.moves.map(moveMessage), nextPageToken: page.nextPageToken };
    },
  };
}
