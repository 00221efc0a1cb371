import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { checkTenantId, tenantIdHeader } from "../wire/tenant-id.ts";
import { AccessKind, accessOf } from "./access.ts";
import { kCaller, kUser } from "./caller-context.ts";
import type { Caller, MeshCredentials } from "./credentials.ts";
import type { TokenVerifier } from "./user-tokens.ts";

const kindNames: Record<AccessKind, string> = {
  [AccessKind.UNSPECIFIED]: "undeclared",
  [AccessKind.PUBLIC]: "public",
  [AccessKind.TENANT]: "tenant",
  [AccessKind.OPERATOR]: "operator",
  [AccessKind.MESH]: "mesh",
};

/**
 * Enforces every method's declared access (`tenantry.options.v1.access`)
 * against the call's `authorization` metadata: OPERATOR methods take the
 * operator token, MESH methods a service token, PUBLIC methods anything.
 * No credential, or one that is not valid, is UNAUTHENTICATED; a valid
 * credential of the wrong kind is PERMISSION_DENIED. Methods outside the
 * `tenantry.` packages (health, reflection) are public; a Tenantry method
 * without a declaration is refused.
 *
 * TENANT methods take a user's access token for the tenant the call names
 * (`x-tenant-id`), signed with that tenant's key and carrying the method's
 * permission: none or an invalid one is UNAUTHENTICATED, one of another
 * tenant or without the permission PERMISSION_DENIED, and operator or
 * service tokens are refused. A permission missing from the tenant's
 * catalog, which no role can grant, is FAILED_PRECONDITION instead: what
 * is missing then is the catalog, not the user's role.
 */
export function accessInterceptor(credentials: MeshCredentials, userTokens?: TokenVerifier): Interceptor {
  return (next) => async (req) => {
    if (!req.service.typeName.startsWith("tenantry.")) {
      return next(req);
    }
    const { kind, permission } = accessOf(req.method);
    if (kind === AccessKind.PUBLIC) {
      return next(req);
    }
    const procedure = `${req.service.typeName}/${req.method.name}`;
    if (kind === AccessKind.UNSPECIFIED) {
      throw new ConnectError(`${procedure} declares no access rule and is refused`, Code.PermissionDenied);
    }
    const authorization = req.header.get("authorization");
    const token = bearerToken(authorization);
    // A token verified before is a user's access token: it is not told apart from the other kinds again.
    const caller = token !== undefined && userTokens?.remembers?.(token) ? userCaller : await credentials.identify(authorization);
    req.contextValues.set(kCaller, caller);
    if (kind === AccessKind.TENANT) {
      if (caller.kind === "operator" || caller.kind === "mesh") {
        throw wrongKind(procedure, kind, caller);
      }
      const tenantId = checkTenantId(req.header.get(tenantIdHeader), `${tenantIdHeader} metadata`);
      if (token === undefined) {
        throw new ConnectError(
          `${procedure} needs a user's access token: log in with tenantry.auth.v1.AuthService/Login and send "authorization: Bearer <access_token>"`,
          Code.Unauthenticated,
        );
      }
      if (userTokens === undefined) {
        throw new ConnectError(`${procedure} is a tenant method in a service that cannot check user tokens`, Code.Internal);
      }
      const user = await userTokens.verify(token, tenantId);
      if (permission !== "" && !user.permissions.has(permission)) {
        if ((await userTokens.catalogHolds?.(tenantId, permission)) === false) {
          throw new ConnectError(
            `${procedure} needs permission "${permission}", which no role of tenant "${tenantId}" can grant: the tenant's permission catalog lacks it (the service that declares it is not registered with Platform, or the tenant's catalog is not current: run FleetService/MigrateTenants with only_behind)`,
            Code.FailedPrecondition,
          );
        }
        throw new ConnectError(`${procedure} needs permission "${permission}", which the user's roles do not grant`, Code.PermissionDenied);
      }
      req.contextValues.set(kUser, user);
      return next(req);
    }
    if (caller.kind === "none") {
      throw new ConnectError(`${procedure} needs ${kindNames[kind]} credentials: send "authorization: Bearer <token>"`, Code.Unauthenticated);
    }
    if (caller.kind === "user") {
      throw wrongKind(procedure, kind, caller);
    }
    if (caller.kind === "unknown") {
      throw new ConnectError(`${procedure}: the authorization credential is not valid (malformed, expired or signed with another key)`, Code.Unauthenticated);
    }
    if ((kind === AccessKind.OPERATOR && caller.kind !== "operator") || (kind === AccessKind.MESH && caller.kind !== "mesh")) {
      throw wrongKind(procedure, kind, caller);
    }
    return next(req);
  };
}

const userCaller: Caller = { kind: "user" };

/** The token of an `authorization: Bearer <token>` value. */
function bearerToken(authorization: string | null): string | undefined {
  return authorization === null ? undefined : /^Bearer\s+(\S+)$/i.exec(authorization)?.[1];
}

function wrongKind(procedure: string, kind: AccessKind, caller: Caller): ConnectError {
  return new ConnectError(`${procedure} is for ${kindNames[kind]} callers; a ${caller.kind} credential is not accepted`, Code.PermissionDenied);
}
