import { Code, ConnectError, createContextKey, type ContextValues, type HandlerContext } from "@connectrpc/connect";
import type { EntityManager } from "@mikro-orm/postgresql";
import type { TenantRoute } from "./tenant-directory.ts";

/** The EntityManager of a tenant call, once forked for that call (see {@link entityManagerOf}), bound to the tenant's database. */
export const kEntityManager = createContextKey<EntityManager | undefined>(undefined, {
  description: "tenant EntityManager",
});

/** Forks the EntityManager of a tenant call; set by the tenant interceptor, called at most once. */
export const kForkEntityManager = createContextKey<(() => EntityManager) | undefined>(undefined, {
  description: "forks the tenant EntityManager",
});

/** The route of the tenant a call runs for. */
export const kTenant = createContextKey<TenantRoute | undefined>(undefined, { description: "tenant route" });

/**
 * The EntityManager of a tenant call's context values, forked the first
 * time it is asked for; undefined outside a tenant call.
 */
export function entityManagerIn(values: ContextValues): EntityManager | undefined {
  let em = values.get(kEntityManager);
  if (em === undefined) {
    const fork = values.get(kForkEntityManager);
    if (fork !== undefined) {
      em = fork();
      values.set(kEntityManager, em);
    }
  }
  return em;
}

/**
 * The EntityManager of a TENANT method's call, forked for it the first time
 * it is asked for (a call that reads without the ORM pays for no fork);
 * throws if the method is not one.
 */
export function entityManagerOf(ctx: HandlerContext): EntityManager {
  const em = entityManagerIn(ctx.values);
  if (em === undefined) {
    throw new ConnectError(`${ctx.method.name} runs without a tenant: its access option must be ACCESS_KIND_TENANT`, Code.Internal);
  }
  return em;
}

/** The tenant of a TENANT method's call; throws if the method is not one. */
export function tenantOf(ctx: HandlerContext): TenantRoute {
  const tenant = ctx.values.get(kTenant);
  if (tenant === undefined) {
    throw new ConnectError(`${ctx.method.name} runs without a tenant: its access option must be ACCESS_KIND_TENANT`, Code.Internal);
  }
  return tenant;
}
