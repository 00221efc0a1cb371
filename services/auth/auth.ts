import { declaredPermissions, loadSecret, SecretBox, startTenantService, type Logger, type Telemetry, type TenantService, type TenantServiceOverrides } from "../mesh/index.ts";
import { AuthService, authService } from "./auth-service.ts";
import type { AuthConfig } from "./config.ts";
import { LoginThrottle } from "./login-throttle.ts";
import { migrations } from "./migrations/index.ts";
import { mergePermissions } from "./permission-catalog.ts";
import { RoleService, roleService } from "./role-service.ts";
import { revokeAllSessions } from "./sessions.ts";
import { SigningKeys } from "./signing-keys.ts";
import { UserService, userService } from "./user-service.ts";

/** The permissions Auth's own RPC services declare. */
const ownPermissions = declaredPermissions([AuthService, UserService, RoleService]);

/**
 * Starts Auth: each tenant's users, roles, permission catalog and signing
 * keys in schema `auth` of its own database; sign-in and tokens. `overrides`
 * may replace Platform as the source of routes (tests of Auth alone).
 */
export async function startAuth(
  config: AuthConfig,
  log: Logger,
  telemetry: Telemetry,
  overrides: Pick<TenantServiceOverrides, "tenantRoutes"> = {},
): Promise<TenantService> {
  const masterKey = await loadSecret({ value: config.TENANTRY_MASTER_KEY, dataDir: config.TENANTRY_DATA_DIR, file: "master.key", generate: config.TENANTRY_ENV !== "production" });
  const keys = new SigningKeys(new SecretBox(masterKey.value));
  const deps = { keys, throttle: new LoginThrottle(), issuer: config.TENANTRY_TOKEN_ISSUER };
  return startTenantService({
    ...overrides,
    name: "auth",
    entities: [],
    migrations,
    services: (tenancy) => [
      { service: AuthService, impl: authService(tenancy, deps, ownPermissions) },
      { service: UserService, impl: userService(tenancy.requests) },
      { service: RoleService, impl: roleService },
    ],
    mergePermissions,
    // A clone's users are the source's, with keys and sessions of their own.
    adoptCopy: async (em, { tenantId }) => {
      await keys.replaceCopied(em, tenantId);
      await revokeAllSessions(em);
    },
    config,
    log,
    telemetry,
  });
}
