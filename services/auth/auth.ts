import { startTenantService, type Logger, type TenantService, type TenantServiceConfig } from "../mesh/index.ts";
import { migrations } from "./migrations/index.ts";

/**
 * Starts Auth. For now it owns schema `auth` in every tenant database and
 * migrates it; users, roles and tokens come with their own contracts.
 */
export function startAuth(config: TenantServiceConfig, log: Logger): Promise<TenantService> {
  return startTenantService({
    name: "auth",
    entities: [],
    migrations,
    services: () => [],
    config,
    log,
  });
}
