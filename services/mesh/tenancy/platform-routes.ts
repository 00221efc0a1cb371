import { createClient, type Transport } from "@connectrpc/connect";
import { PlatformService, TenantStatus, type TenantRoute } from "../../../gen/tenantry/platform/v1/platform_service_pb.js";

export { TenantStatus, type TenantRoute };

/** A tenant's change, as Platform's change feed announces it. */
export interface TenantChange {
  /** The tenant that changed; empty in the feed's first message, which says it is connected. */
  tenantId: string;
  /** Its status now. */
  status: TenantStatus;
}

/** Where a service learns tenants' routes and their changes (see {@link platformRoutes}). */
export interface PlatformRoutes {
  /** A tenant's route; rejects with NOT_FOUND for an unknown tenant. */
  resolve(tenantId: string, options: { signal: AbortSignal; timeoutMs: number }): Promise<TenantRoute>;
  /** The change feed, until `signal` is aborted or the feed breaks. */
  changes(signal: AbortSignal): AsyncIterable<TenantChange>;
}

/**
 * Tenants' routes from Platform (`ResolveTenant`) and their changes
 * (`WatchTenants`), over a mesh transport whose calls carry a service
 * credential. The only module of the mesh runtime that knows these methods
 * belong to PlatformService.
 */
export function platformRoutes(transport: Transport): PlatformRoutes {
  const platform = createClient(PlatformService, transport);
  return {
    async resolve(tenantId, { signal, timeoutMs }) {
      const { route } = await platform.resolveTenant({ tenantId }, { signal, timeoutMs });
      if (route === undefined) {
        throw new Error(`Platform answered ResolveTenant for "${tenantId}" without a route`);
      }
      return route;
    },
    changes: (signal) => platform.watchTenants({}, { signal }),
  };
}
