import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type Interceptor, type StreamRequest, type UnaryRequest, type UnaryResponse } from "@connectrpc/connect";
import { AccessKind, accessOf } from "../access/access.ts";
import { guardStream } from "../wire/stream-response.ts";
import { tenantIdHeader } from "../wire/tenant-id.ts";
import { isDatabaseUnreachable } from "./database-unreachable.ts";
import type { Tenancy } from "./tenancy.ts";
import { kEntityManager, kForkEntityManager, kTenant } from "./tenant-context.ts";

/** How often a read of a tenant whose writes are frozen is tried in all, when its database turns it away (a move's cutover). */
const readAttemptsWhileFrozen = 3;

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
 *
 * A unary read (NO_SIDE_EFFECTS) of a frozen tenant that its database turns
 * away (a move's cutover ends the tenant's sessions at the source and takes
 * its login) is tried again, with a fresh EntityManager: at once, then once
 * the freeze has ended (the route has switched by then), so that reads
 * through a move do not fail.
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
    const read = async (req: UnaryRequest, tenantId: string): Promise<UnaryResponse> => {
      for (let attempt = 1; ; attempt++) {
        const frozen = freezes.isFrozen(tenantId);
        try {
          return (await served(req)) as UnaryResponse;
        } catch (error) {
          if (attempt >= readAttemptsWhileFrozen || !(frozen || freezes.isFrozen(tenantId)) || !turnedAway(error) || req.signal.aborted) {
            throw error;
          }
          req.contextValues.delete(kEntityManager);
          if (attempt > 1) {
            await freezes.thawed(tenantId, req.signal);
          }
        }
      }
    };
    return async (req: UnaryRequest | StreamRequest) => {
      const access = accessOf(req.method);
      if (access.kind !== AccessKind.TENANT && !(access.kind === AccessKind.PUBLIC && access.inTenant)) {
        return next(req);
      }
      const tenantId = req.header.get(tenantIdHeader);
      if (tenantId === null) {
        return served(req);
      }
      if (req.method.idempotency === MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS) {
        return req.stream ? served(req) : read(req, tenantId);
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


/**
 * Whether an error says that the tenant's database turned the call away: the
 * connection could not be opened or was ended (UNAVAILABLE from the
 * connection budget, a lost connection), or the tenant's role may no
 * longer log in (SQLSTATE 28000).
 */
function turnedAway(error: unknown): boolean {
  // The ORM wraps what the connection budget said (a ConnectError) as the cause of its own exception.
  for (let cause = error, depth = 0; typeof cause === "object" && cause !== null && depth < 8; cause = (cause as { cause?: unknown }).cause, depth++) {
    if (cause instanceof ConnectError) {
      return cause.code === Code.Unavailable;
    }
  }
  return isDatabaseUnreachable(error) || (error as { code?: unknown } | null)?.code === "28000";
}
