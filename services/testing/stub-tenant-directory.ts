import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import { EventEmitter, on, once } from "node:events";
import { TenantRouteSchema, TenantStatus, type TenantRoute } from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import type { PlatformRoutes, TenantChange, WriteFreezeNotice } from "../mesh/index.ts";

/** What a test may change in a tenant's route. */
export type RouteChange = Partial<Pick<TenantRoute, "status" | "tier" | "maxUsers" | "maxStorageBytes">>;

/**
 * Tenants' routes from a map, for a service that runs without Platform: it
 * answers as Platform's ResolveTenant does (NOT_FOUND for a tenant it does
 * not hold), announces each change as Platform's WatchTenants does, and
 * freezes tenants' writes as Platform's WriteFreezeService does, without
 * renewing them by itself.
 */
export class StubTenantDirectory implements PlatformRoutes {
  readonly #routes = new Map<string, TenantRoute>();
  readonly #changes = new EventEmitter();
  /** Freezes in force, by tenant, and when their lease runs out. */
  readonly #freezes = new Map<string, { freezeId: string; leaseUntil: number }>();
  /** Acknowledgements: freeze id → instance ids. */
  readonly #acknowledged = new Map<string, Set<string>>();

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

  /** Freezes a tenant's writes for `leaseMs` unless renewed, and announces it; returns the freeze's id. */
  freeze(tenantId: string, leaseMs: number): string {
    const freezeId = randomUUID();
    this.#freezes.set(tenantId, { freezeId, leaseUntil: Date.now() + leaseMs });
    this.#announce({ tenantId, freezeId, leaseMs });
    return freezeId;
  }

  /** Renews a tenant's freeze for `leaseMs` more, and announces it. */
  renew(tenantId: string, leaseMs: number): void {
    const freeze = this.#freezes.get(tenantId);
    if (freeze === undefined) {
      throw new Error(`tenant "${tenantId}" is not frozen`);
    }
    freeze.leaseUntil = Date.now() + leaseMs;
    this.#announce({ tenantId, freezeId: freeze.freezeId, leaseMs });
  }

  /** Ends a tenant's freeze, and announces it. */
  thaw(tenantId: string): void {
    const freeze = this.#freezes.get(tenantId);
    this.#freezes.delete(tenantId);
    if (freeze !== undefined) {
      this.#announce({ tenantId, freezeId: freeze.freezeId, leaseMs: 0 });
    }
  }

  /** The instances that have acknowledged a freeze so far. */
  acknowledgements(freezeId: string): string[] {
    return [...(this.#acknowledged.get(freezeId) ?? [])];
  }

  /** Resolves once some instance has acknowledged the freeze. */
  async acknowledged(freezeId: string): Promise<void> {
    while (this.acknowledgements(freezeId).length === 0) {
      await once(this.#changes, "acknowledged");
    }
  }

  async acknowledgeFreeze(freeze: { tenantId: string; freezeId: string; instanceId: string }): Promise<void> {
    if (this.#freezes.get(freeze.tenantId)?.freezeId !== freeze.freezeId) {
      throw new ConnectError(`no write freeze "${freeze.freezeId}" of tenant "${freeze.tenantId}" is in force`, Code.NotFound);
    }
    const instances = this.#acknowledged.get(freeze.freezeId) ?? new Set<string>();
    instances.add(freeze.instanceId);
    this.#acknowledged.set(freeze.freezeId, instances);
    this.#changes.emit("acknowledged");
  }

  #announce(freeze: WriteFreezeNotice): void {
    this.#changes.emit("change", { tenantId: freeze.tenantId, status: TenantStatus.UNSPECIFIED, freeze } satisfies TenantChange);
  }

  async resolve(tenantId: string): Promise<TenantRoute> {
    const route = this.#routes.get(tenantId);
    if (route === undefined) {
      throw new ConnectError(`tenant "${tenantId}" not found`, Code.NotFound);
    }
    return route;
  }

  async *changes(signal: AbortSignal, instanceId?: string): AsyncIterable<TenantChange> {
    // Listening before the first value, which says so: from then on nothing is missed.
    const changes = on(this.#changes, "change", { signal });
    const now = Date.now();
    const freezes = [...this.#freezes]
      .filter(([, f]) => f.leaseUntil > now)
      .map(([tenantId, f]) => ({ tenantId, freezeId: f.freezeId, leaseMs: f.leaseUntil - now }));
    yield { tenantId: "", status: TenantStatus.UNSPECIFIED, freezes: instanceId === undefined ? [] : freezes };
    for await (const [change] of changes) {
      if ((change as TenantChange).freeze === undefined || instanceId !== undefined) {
        yield change as TenantChange;
      }
    }
  }
}
