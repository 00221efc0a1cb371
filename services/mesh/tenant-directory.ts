import { Code, ConnectError } from "@connectrpc/connect";
import { LRUCache } from "lru-cache";
import { TenantStatus, type TenantRoute } from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import { checkTenantId } from "./tenant-id.ts";

export { TenantStatus, type TenantRoute };

/** Options of a {@link TenantDirectory}. */
export interface TenantDirectoryOptions {
  /**
   * Asks the source of truth (Platform's ResolveTenant) for a tenant's route.
   * Rejects with NOT_FOUND for an unknown tenant.
   */
  resolve: (tenantId: string, signal: AbortSignal) => Promise<TenantRoute>;
  /** How many tenants' routes are kept; the least recently used go first. */
  maxEntries: number;
  /** How long an ACTIVE tenant's route is trusted before it is asked for again. */
  ttlMs: number;
  /**
   * How long a route of a tenant that is not ACTIVE is trusted: short, since
   * a provisioning tenant becomes ACTIVE moments later.
   */
  inactiveTtlMs?: number;
}

/**
 * The routes of the tenants a service process has seen: a bounded cache in
 * front of Platform, asking it once per tenant however many calls wait for
 * the answer.
 */
export class TenantDirectory {
  readonly #cache: LRUCache<string, TenantRoute>;

  constructor(options: TenantDirectoryOptions) {
    const inactiveTtl = options.inactiveTtlMs ?? Math.min(1000, options.ttlMs);
    this.#cache = new LRUCache<string, TenantRoute>({
      max: options.maxEntries,
      ttl: options.ttlMs,
      fetchMethod: async (tenantId, _stale, { signal, options: entry }) => {
        const route = await options.resolve(tenantId, signal);
        if (route.status !== TenantStatus.ACTIVE) {
          entry.ttl = inactiveTtl;
        }
        return route;
      },
    });
  }

  /**
   * Returns the route of a tenant in any status. Rejects with
   * INVALID_ARGUMENT for a malformed id and NOT_FOUND for an unknown tenant.
   */
  async lookup(tenantId: string | null | undefined, where?: string): Promise<TenantRoute> {
    const id = checkTenantId(tenantId, where);
    const route = await this.#cache.fetch(id);
    if (route === undefined) {
      throw new ConnectError(`tenant "${id}" not found`, Code.NotFound);
    }
    return route;
  }

  /**
   * Returns the route of a tenant that may be served: INVALID_ARGUMENT for a
   * missing or malformed id, NOT_FOUND for an unknown tenant,
   * FAILED_PRECONDITION for a tenant that is not ACTIVE.
   */
  async resolveActive(tenantId: string | null | undefined, where?: string): Promise<TenantRoute> {
    let route = await this.lookup(tenantId, where);
    if (route.status === TenantStatus.PROVISIONING) {
      // Provisioning ends moments after the route was cached (this service's
      // own Migrate looked it up): ask again rather than refuse a new tenant.
      route = (await this.#cache.fetch(route.tenantId, { forceRefresh: true })) ?? route;
    }
    switch (route.status) {
      case TenantStatus.ACTIVE:
        return route;
      case TenantStatus.SUSPENDED:
        throw new ConnectError(`tenant "${route.tenantId}" is suspended; an operator can resume it`, Code.FailedPrecondition);
      case TenantStatus.PROVISIONING:
        throw new ConnectError(`tenant "${route.tenantId}" is still being provisioned; retry shortly`, Code.FailedPrecondition);
      default:
        throw new ConnectError(
          `tenant "${route.tenantId}" is ${TenantStatus[route.status]?.toLowerCase() ?? "not active"} and cannot be served`,
          Code.FailedPrecondition,
        );
    }
  }

  /** Forgets a tenant's route, so that the next call asks again. */
  invalidate(tenantId: string): void {
    this.#cache.delete(tenantId);
  }

  /** How many routes are cached. */
  get size(): number {
    return this.#cache.size;
  }
}
