import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { AuthService } from "../../gen/tenantry/auth/v1/auth_service_pb.js";
import { entityManagerOf, kUser, tenantOf, TenantStatus, type Permission, type Tenancy } from "../mesh/index.ts";
import { listPermissions } from "./roles.ts";
import { login, logout, refresh, type SessionDeps } from "./sessions.ts";
import { bootstrapTenant } from "./tenant-bootstrap.ts";
import { getUser } from "./users.ts";

export { AuthService };

/**
 * `tenantry.auth.v1.AuthService`: sign-in, tokens and each tenant's keys.
 * `ownPermissions` are those Auth declares, merged into every tenant's
 * catalog besides those a BootstrapTenant call carries.
 */
export function authService(tenancy: Tenancy, deps: SessionDeps, ownPermissions: readonly Permission[]): ServiceImpl<typeof AuthService> {
  return {
    async login(req, ctx) {
      if (req.email === "" || req.password === "") {
        throw new ConnectError("email and password are required", Code.InvalidArgument);
      }
      return login(entityManagerOf(ctx), deps, tenantOf(ctx).tenantId, req.email, req.password);
    },
    async refresh(req, ctx) {
      if (req.refreshToken === "") {
        throw new ConnectError("refresh_token is required", Code.InvalidArgument);
      }
      return refresh(entityManagerOf(ctx), deps, tenantOf(ctx).tenantId, req.refreshToken);
    },
    async logout(req, ctx) {
      if (req.refreshToken !== "") {
        await logout(entityManagerOf(ctx), req.refreshToken);
      }
      return {};
    },
    async getJwks(_req, ctx) {
      const em = entityManagerOf(ctx);
      const { jwks } = await deps.keys.keys(em, tenantOf(ctx).tenantId);
      const permissions = await listPermissions(em);
      return { jwks: JSON.stringify(jwks), permissions: permissions.map((p) => p.name) };
    },
    async whoAmI(_req, ctx) {
      const user = ctx.values.get(kUser)!;
      const found = await getUser(entityManagerOf(ctx), user.userId).catch((error: unknown) => {
        // Only a user that is gone means the token is: an unreachable database is no reason to log in again.
        if (error instanceof ConnectError && error.code === Code.NotFound) {
          throw new ConnectError("the user of this access token no longer exists", Code.Unauthenticated);
        }
        throw error;
      });
      return { userId: found.userId, tenantId: user.tenantId, email: found.email, displayName: found.displayName, roles: found.roles, permissions: [...user.permissions].sort() };
    },
    async rotateSigningKey(req, ctx) {
      // A write of the tenant named in the request: held while its writes are frozen, as its own calls are.
      const kid = await tenancy.freezes.writing(req.tenantId, ctx.signal, async () => {
        const route = await tenancy.directory.lookup(req.tenantId, "tenant_id");
        return tenancy.scope.run(tenancy.endpointOf(route), () => deps.keys.rotate(tenancy.fork(), route.tenantId));
      });
      return { kid };
    },
    async bootstrapTenant(req) {
      const route = await tenancy.directory.lookup(req.tenantId, "tenant_id");
      if (route.status !== TenantStatus.PROVISIONING && route.status !== TenantStatus.ACTIVE) {
        throw new ConnectError(`tenant "${route.tenantId}" is ${TenantStatus[route.status]?.toLowerCase()}; only a new or active tenant is bootstrapped`, Code.FailedPrecondition);
      }
      return tenancy.scope.run(tenancy.endpointOf(route), () => bootstrapTenant(tenancy.fork(), deps.keys, req, [...ownPermissions, ...req.permissions]));
    },
  };
}
