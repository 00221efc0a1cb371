import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { EventEmitter, on } from "node:events";
import { TenantRouteSchema, TenantStatus, type TenantRoute } from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import type { PlatformRoutes, TenantChange } from "../mesh/index.ts";

/** What a test may change in a tenant's route. */
export type RouteChange = Partial<Pick<TenantRoute, "status" | "tier" | "maxUsers" | "maxStorageBytes">>;

/**
 * Tenants' routes from a map, for a service that runs without Platform: it
 * answers as Platform's ResolveTenant does (NOT_FOUND for a tenant it does
 * not hold) and announces each change as Platform's WatchTenants does.
 */
export class StubTenantDirectory implements PlatformRoutes {
  readonly #routes = new Map<string, TenantRoute>();
  readonly #changes = new EventEmitter();

  /** Holds a tenant's route, and announces it as a change of the tenant. */
  set(route: TenantRoute): void {
    this.#routes.set(route.tenantId, route);
    this.#changes.emit("change", { tenantId: route.tenantId, status: route.status } satisfies TenantChange);
  }

  /** Changes a tenant's route, and announces the change. */
  change(tenantId: string, change: RouteChange): TenantRoute {
    const route = this.#routes.get(tenantId);
    if (route === undefined) {
      throw new Error(`no route of tenant "${tenantId}" to change`);
    }
    const changed = create(TenantRouteSchema, { ...route, ...change });
    this.set(changed);
    return changed;
  }

  async resolve(tenantId: string): Promise<TenantRoute> {
    const route = this.#routes.get(tenantId);
    if (route === undefined) {
      throw new ConnectError(`tenant "${tenantId}" not found`, Code.NotFound);
    }
    return route;
  }

  async *changes(signal: AbortSignal): AsyncIterable<TenantChange> {
    // Listening before the first value, which says so: from then on nothing is missed.
    const changes = on(this.#changes, "change", { signal });
    yield { tenantId: "", status: TenantStatus.UNSPECIFIED };
    for await (const [change] of changes) {
      yield change as TenantChange;
    }
  }
}
