import type { BatchObservableResult, Meter } from "@opentelemetry/api";
import type { MikroORM } from "@mikro-orm/postgresql";
import { TenantStatus } from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import type { Logger } from "../mesh/index.ts";
import type { FleetMigrations } from "./fleet/index.ts";
import { catalogMarkOf, latestVersionsOf } from "./schema-services.ts";
import { countSchemaStates, countTenantsByStatus, recordedSchemaServices, statusName } from "./stores/index.ts";

/** Every status a tenant record can have, so that an empty one reads 0 rather than disappearing. */
const statuses = Object.values(TenantStatus).filter((s): s is TenantStatus => typeof s === "number" && s !== TenantStatus.UNSPECIFIED).map(statusName);

/**
 * Publishes Platform's view of the fleet as metrics, read from its database
 * at each collection (a scrape of `/metrics`): tenants by status, tenants
 * current, behind or failed per data-owning service (from the migration
 * ledger, against each service's latest known version), and fleet
 * migrations running in this process. Returns the function that stops
 * publishing them.
 */
export function observePlatform(meter: Meter, options: { orm: MikroORM; fleet: FleetMigrations; log: Logger }): () => void {
  const tenants = meter.createObservableGauge("tenantry.tenants", {
    description: "Tenants in the registry, by status.",
  });
  const fleetTenants = meter.createObservableGauge("tenantry.fleet.tenants", {
    description: "Active and suspended tenants per service whose schema is current, behind the service's latest version, or failed to migrate.",
  });
  const running = meter.createObservableGauge("tenantry.fleet.migrations.running", {
    description: "Fleet migrations (MigrateTenants) running in this process.",
  });
  const observables = [tenants, fleetTenants, running];
  const callback = async (result: BatchObservableResult) => {
    result.observe(running, options.fleet.running);
    const em = options.orm.em.fork();
    try {
      const counts = await countTenantsByStatus(em);
      for (const status of statuses) {
        result.observe(tenants, counts.get(status) ?? 0, { status });
      }
      const recorded = await recordedSchemaServices(em);
      const states = await countSchemaStates(em, latestVersionsOf(recorded), catalogMarkOf(recorded));
      for (const [service, { current, behind, failed }] of states) {
        result.observe(fleetTenants, current, { service, state: "current" });
        result.observe(fleetTenants, behind, { service, state: "behind" });
        result.observe(fleetTenants, failed, { service, state: "failed" });
      }
    } catch (error) {
      // A scrape while the database is away reports what it can; the next one tries again.
      options.log.warn({ err: error }, "platform metrics could not be read");
    }
  };
  meter.addBatchObservableCallback(callback, observables);
  return () => meter.removeBatchObservableCallback(callback, observables);
}
