import type { ServiceImpl } from "@connectrpc/connect";
import { MoveMode } from "../../gen/tenantry/platform/v1/move_pb.js";
import { MoveService } from "../../gen/tenantry/platform/v1/move_service_pb.js";
import { Placement } from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import type { AuditLog } from "./audit-log.ts";
import type { ClusterDrain, DrainTotals, TenantMoves } from "./moves/index.ts";
import { moveMessage } from "./tenant-messages.ts";

export { MoveService };

/** `tenantry.platform.v1.MoveService` over the moves; MoveTenant and DrainCluster are audited, as is each step of a move. */
export function moveService(moves: TenantMoves, drains: ClusterDrain, audit: AuditLog): ServiceImpl<typeof MoveService> {
  return {
    async moveTenant(req, ctx) {
      const detail = { targetCluster: req.targetCluster, mode: MoveMode[req.mode], compareDigests: req.compareDigests, targetPlacement: Placement[req.targetPlacement], targetPoolDatabase: req.targetPoolDatabase };
      const move = await audit.audited(ctx, req.tenantId, detail, () =>
        moves.move({
          tenantId: req.tenantId,
          targetCluster: req.targetCluster,
          mode: req.mode === MoveMode.UNSPECIFIED ? MoveMode.AUTO : req.mode,
          compareDigests: req.compareDigests,
          targetPlacement: req.targetPlacement,
          targetPoolDatabase: req.targetPoolDatabase,
        }),
      );
      return { move: moveMessage(move) };
    },
    async *drainCluster(req, ctx) {
      const detail = { cluster: req.cluster, maxConcurrency: req.maxConcurrency, mode: MoveMode[req.mode], targetCluster: req.targetCluster };
      let totals: DrainTotals | undefined;
      const events = drains.drain(req, ctx.signal);
      for await (const progress of audit.auditedStream(ctx, undefined, detail, events, () => ({ totals }))) {
        totals = progress.totals;
        yield progress;
      }
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
