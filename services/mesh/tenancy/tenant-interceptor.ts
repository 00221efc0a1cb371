import type { Interceptor } from "@connectrpc/connect";
import { AccessKind, accessOf } from "../access/access.ts";
import { tenantIdHeader } from "../wire/tenant-id.ts";
import type { Tenancy } from "./tenancy.ts";
import { kForkEntityManager, kTenant } from "./tenant-context.ts";

/**
 * Resolves the tenant of every TENANT method's call (and of PUBLIC methods
 * declared `in_tenant`, such as Login) from the `x-tenant-id`
 * metadata and runs the handler in that tenant's scope, where
 * `entityManagerOf` forks an EntityManager for the call when the handler
 * first asks for one. A bad id is INVALID_ARGUMENT, an unknown one
 * NOT_FOUND, one that is not ACTIVE FAILED_PRECONDITION. Other methods pass
 * through untouched.
 */
export function tenantInterceptor(tenancy: Tenancy): Interceptor {
  const fork = () => tenancy.fork();
  return (next) => async (req) => {
    const access = accessOf(req.method);
    if (access.kind !== AccessKind.TENANT && !(access.kind === AccessKind.PUBLIC && access.inTenant)) {
      return next(req);
    }
    const route = await tenancy.directory.resolveActive(req.header.get(tenantIdHeader), `${tenantIdHeader} metadata`);
    const endpoint = tenancy.endpointOf(route);
    req.contextValues.set(kTenant, route);
    req.contextValues.set(kForkEntityManager, fork);
    const res = await tenancy.scope.run(endpoint, () => next(req));
    if (!res.stream) {
      return res;
    }
    return { ...res, message: tenancy.scope.wrap(endpoint, res.message) };
  };
}

