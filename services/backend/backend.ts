import { startTenantService, type Logger, type Telemetry, type TenantService, type TenantServiceConfig, type TenantServiceOverrides } from "../mesh/index.ts";
import { Entry } from "./entities/entry.ts";
import { EntryService, entryService } from "./entry-service.ts";
import { migrations } from "./migrations/index.ts";

/**
 * Starts Backend: the tenants' entries, in schema `backend` of each tenant
 * database. `overrides` replace its migrations (tests roll out a newer
 * version), token verification (benchmarks, tests of Backend alone) or
 * Platform as the source of routes (tests of Backend alone).
 */
export function startBackend(config: TenantServiceConfig, log: Logger, telemetry: Telemetry, overrides: TenantServiceOverrides = {}): Promise<TenantService> {
  return startTenantService({
    ...overrides,
    name: "backend",
    entities: [Entry],
    migrations: overrides.migrations ?? migrations,
    services: (tenancy) => [{ service: EntryService, impl: entryService(tenancy) }],
    config,
    log,
    telemetry,
  });
}
