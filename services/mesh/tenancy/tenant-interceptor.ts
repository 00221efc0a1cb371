import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import type { Interceptor, UnaryRequest, StreamRequest } from "@connectrpc/connect";
import { AccessKind, accessOf } from "../access/access.ts";
import { guardStream } from "../wire/stream-response.ts";
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
 *
 * A call of a method that is not NO_SIDE_EFFECTS (a write) is let in by the
 * tenant's write freezes first: held while the tenant is frozen (then
 * UNAVAILABLE), and counted as under way until it ends, its response stream
 * included, so that a freeze knows when the tenant's writes have drained.
 * Its route is resolved after the hold: a move switches it before thawing.
 */
export function tenantInterceptor(tenancy: Tenancy): Interceptor {
  const fork = () => tenancy.fork();
  const serve: Interceptor = (next) => async (req) => {
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
  const freezes = tenancy.freezes;
  return (next) => {
    const served = serve(next);
    return async (req: UnaryRequest | StreamRequest) => {
      const access = accessOf(req.method);
      if (access.kind !== AccessKind.TENANT && !(access.kind === AccessKind.PUBLIC && access.inTenant)) {
        return next(req);
      }
      const tenantId = req.header.get(tenantIdHeader);
      if (req.method.idempotency === MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS || tenantId === null) {
        return served(req);
      }
      const held = freezes.enter(tenantId, req.signal);
      if (held !== undefined) {
        await held;
      }
      let res;
      try {
        res = await served(req);
      } catch (error) {
        freezes.leave(tenantId);
        throw error;
      }
      if (!res.stream) {
        freezes.leave(tenantId);
        return res;
      }
      return guardStream(res, { finally: () => freezes.leave(tenantId) });
    };
  };
}

