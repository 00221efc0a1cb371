import type { MessageInitShape } from "@bufbuild/protobuf";
import { durationMs, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { WriteFreezeService, type WriteFreezeSchema } from "../../gen/tenantry/platform/v1/write_freeze_service_pb.js";
import { kCaller } from "../mesh/index.ts";
import { actorOf, type AuditLog } from "./audit-log.ts";
import { maxFreezeTtlMs, type TenantWriteFreezes } from "./freezes/index.ts";
import type { WriteFreezeRecord } from "./stores/index.ts";

export { WriteFreezeService };

/** A freeze lasts this long unless the request says otherwise. */
const defaultTtlMs = 60_000;

/** A freeze's record as the API's WriteFreeze message. */
function freezeMessage(freeze: WriteFreezeRecord): MessageInitShape<typeof WriteFreezeSchema> {
  return {
    freezeId: freeze.freezeId,
    tenantId: freeze.tenantId,
    actor: freeze.actor,
    createTime: timestampFromDate(freeze.createdAt),
    expireTime: timestampFromDate(freeze.expiresAt),
    ...(freeze.acknowledgedAt === null ? {} : { acknowledgeTime: timestampFromDate(freeze.acknowledgedAt) }),
    acknowledgements: freeze.acknowledgements.map((a) => ({ service: a.service, instanceId: a.instanceId, acknowledgeTime: timestampFromDate(a.acknowledgedAt) })),
  };
}

/** `tenantry.platform.v1.WriteFreezeService` over the tenants' write freezes; freezes and thaws are audited. */
export function writeFreezeService(freezes: TenantWriteFreezes, audit: AuditLog): ServiceImpl<typeof WriteFreezeService> {
  return {
    async freezeTenantWrites(req, ctx) {
      const ttlMs = req.ttl === undefined ? defaultTtlMs : durationMs(req.ttl);
      if (ttlMs < 0 || ttlMs > maxFreezeTtlMs) {
        throw new ConnectError(`ttl must be between 0 (a minute) and an hour, not ${ttlMs} ms`, Code.InvalidArgument);
      }
      const actor = actorOf(ctx.values.get(kCaller));
      const detail: Record<string, unknown> = { ttlMs: ttlMs || defaultTtlMs };
      const freeze = await audit.audited(ctx, req.tenantId, detail, async () => {
        const made = await freezes.freeze(req.tenantId, { ttlMs: ttlMs || defaultTtlMs, actor });
        Object.assign(detail, { freezeId: made.freezeId, acknowledgedBy: made.acknowledgements.map((a) => `${a.service}/${a.instanceId}`) });
        return made;
      });
      return { freeze: freezeMessage(freeze) };
    },
    async thawTenantWrites(req, ctx) {
      const thawed = await audit.audited(ctx, req.tenantId, { freezeId: req.freezeId }, () => freezes.thaw(req.tenantId, req.freezeId));
      return thawed === null ? {} : { freeze: freezeMessage(thawed) };
    },
    async listWriteFreezes() {
      return { freezes: (await freezes.list()).map(freezeMessage) };
    },
    async acknowledgeWriteFreeze(req, ctx) {
      const caller = ctx.values.get(kCaller);
      await freezes.acknowledge({ ...req, service: caller.kind === "mesh" ? caller.service : actorOf(caller) });
      return {};
    },
  };
}
