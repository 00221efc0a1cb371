import type { MigrationObject } from "@mikro-orm/core";
import { startTenantService, type Logger, type Telemetry, type TenantService, type TenantServiceConfig, type TokenVerifier } from "../mesh/index.ts";
import { Entry } from "./entities/entry.ts";
import { EntryService, entryService } from "./entry-service.ts";
import { migrations } from "./migrations/index.ts";

/**
 * Starts Backend: the tenants' entries, in schema `backend` of each tenant
 * database. `schemaMigrations` replaces its migrations (tests use it to roll
 * out a newer version); `userTokens` replaces token verification (benchmarks).
 */
export function startBackend(
  config: TenantServiceConfig,
  log: Logger,
  telemetry: Telemetry,
  schemaMigrations: MigrationObject[] = migrations,
  userTokens?: TokenVerifier,
): Promise<TenantService> {
  return startTenantService({
    ...(userTokens === undefined ? {} : { userTokens }),
    name: "backend",
    entities: [Entry],
    migrations: schemaMigrations,
    services: (tenancy) => [{ service: EntryService, impl: entryService(tenancy.storage, tenancy.requests) }],
    config,
    log,
    telemetry,
  });
}
