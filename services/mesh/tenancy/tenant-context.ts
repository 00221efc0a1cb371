import { Code, ConnectError, createContextKey, type HandlerContext } from "@connectrpc/connect";
import type { EntityManager } from "@mikro-orm/postgresql";
import type { TenantRoute } from "./tenant-directory.ts";

/** The EntityManager of a tenant call, forked for that call and bound to the tenant's database. */
export const kEntityManager = createContextKey<EntityManager | undefined>(undefined, {
  description: "tenant EntityManager",
});

/** The route of the tenant a call runs for. */
export const kTenant = createContextKey<TenantRoute | undefined>(undefined, { description: "tenant route" });

/** The EntityManager of a TENANT method's call; throws if the method is not one. */
export function entityManagerOf(ctx: HandlerContext): EntityManager {
  const em = ctx.values.get(kEntityManager);
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
