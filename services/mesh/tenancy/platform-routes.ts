import { durationMs, type Duration } from "@bufbuild/protobuf/wkt";
import { createClient, type Transport } from "@connectrpc/connect";
import { Placement, PlatformService, TenantStatus, type TenantRoute } from "../../../gen/tenantry/platform/v1/platform_service_pb.js";
import { WriteFreezeService } from "../../../gen/tenantry/platform/v1/write_freeze_service_pb.js";
import type { WriteFreezeNotice } from "./write-freezes.ts";

export { Placement, TenantStatus, type TenantRoute };

/** A tenant's change, as Platform's change feed announces it. */
export interface TenantChange {
  /** The tenant that changed; empty in the feed's first message, which says it is connected. */
  tenantId: string;
  /** Its status now; unspecified in a message that announces a freeze. */
  status: TenantStatus;
  /** In the first message, to a watcher that named its instance: the write freezes in force. */
  freezes?: WriteFreezeNotice[];
  /** To a watcher that named its instance: a write freeze of the tenant began, was renewed or ended (the tenant did not change). */
  freeze?: WriteFreezeNotice;
}

/** Where a service learns tenants' routes and their changes (see {@link platformRoutes}). */
export interface PlatformRoutes {
  /** A tenant's route; rejects with NOT_FOUND for an unknown tenant. */
  resolve(tenantId: string, options: { signal: AbortSignal; timeoutMs: number }): Promise<TenantRoute>;
  /** The routes of several tenants in one request (at most 1000), those Platform does not know left out. */
  resolveMany?(tenantIds: string[], options: { signal: AbortSignal; timeoutMs: number }): Promise<TenantRoute[]>;
  /**
   * The change feed, until `signal` is aborted or the feed breaks. Watched
   * as the service instance `instanceId`, it also announces write freezes,
   * which the instance must acknowledge.
   */
  changes(signal: AbortSignal, instanceId?: string): AsyncIterable<TenantChange>;
  /** Says that the instance holds a tenant's writes under a freeze; rejects with NOT_FOUND once the freeze has ended. */
  acknowledgeFreeze(freeze: { tenantId: string; freezeId: string; instanceId: string }, options: { timeoutMs: number }): Promise<void>;
}

/**
 * Tenants' routes from Platform (`ResolveTenant`, `ResolveTenants`), their changes
 * (`WatchTenants`) and acknowledgements of their write freezes
 * (`AcknowledgeWriteFreeze`), over a mesh transport whose calls carry a
 * service credential. The only module of the mesh runtime that knows these
 * methods and the services they belong to.
 */
export function platformRoutes(transport: Transport): PlatformRoutes {
  const platform = createClient(PlatformService, transport);
  const freezes = createClient(WriteFreezeService, transport);
  return {
    async resolve(tenantId, { signal, timeoutMs }) {
      const { route } = await platform.resolveTenant({ tenantId }, { signal, timeoutMs });
      if (route === undefined) {
        throw new Error(`Platform answered ResolveTenant for "${tenantId}" without a route`);
      }
      return route;
    },
    async resolveMany(tenantIds, { signal, timeoutMs }) {
      return (await platform.resolveTenants({ tenantIds }, { signal, timeoutMs })).routes;
    },
    async *changes(signal, instanceId = "") {
      for await (const change of platform.watchTenants({ instanceId }, { signal })) {
        yield {
          tenantId: change.tenantId,
          status: change.status,
          freezes: change.freezes.map(freezeNotice),
          ...(change.freeze === undefined ? {} : { freeze: freezeNotice(change.freeze) }),
        };
      }
    },
    async acknowledgeFreeze(freeze, { timeoutMs }) {
      await freezes.acknowledgeWriteFreeze(freeze, { timeoutMs });
    },
  };
}

function freezeNotice(notice: { tenantId: string; freezeId: string; lease?: Duration }): WriteFreezeNotice {
  return { tenantId: notice.tenantId, freezeId: notice.freezeId, leaseMs: notice.lease === undefined ? 0 : durationMs(notice.lease) };
}
