import { startTenantService, type Logger, type TenantService, type TenantServiceConfig } from "../mesh/index.ts";
import { Entry } from "./entities/entry.ts";
import { EntryService, entryService } from "./entry-service.ts";
import { migrations } from "./migrations/index.ts";

/** Starts Backend: the tenants' entries, in schema `backend` of each tenant database. */
export function startBackend(config: TenantServiceConfig, log: Logger): Promise<TenantService> {
  return startTenantService({
    name: "backend",
    entities: [Entry],
    migrations,
    services: () => [{ service: EntryService, impl: entryService }],
    config,
    log,
  });
}
