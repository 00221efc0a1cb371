import { Code, ConnectError, createContextKey, type HandlerContext } from "@connectrpc/connect";
import type { EntityManager } from "@mikro-orm/postgresql";
import type { Caller } from "./credentials.ts";
import type { TokenUser } from "./user-tokens.ts";
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

/** Who made the call, as the access interceptor identified them. */
export const kCaller = createContextKey<Caller>({ kind: "none" }, { description: "caller" });

/** The user of a TENANT method's call, from its verified access token. */
export const kUser = createContextKey<TokenUser | undefined>(undefined, { description: "user" });

/** The address the call came from (the socket's remote address), for per-source limits. */
export const kPeer = createContextKey<string>("", { description: "peer address" });
