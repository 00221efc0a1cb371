import type { Attributes, BatchObservableResult, Meter } from "@opentelemetry/api";
import type { ConnectionBudget } from "./connection-budget.ts";

/**
 * Publishes a connection budget's counters as metrics, read at each
 * collection (a scrape of `/metrics`): connections open, in use, calls
 * waiting for one, tenants connected, and connections opened and cold tenant
 * opens since start; and the same of each pool database apart, by its name
 * and server (`pool_database`, `server`: as many series as pool databases,
 * never one per tenant), since its pooled tenants share its connections.
 * Returns the function that stops publishing them.
 */
export function observeConnectionBudget(meter: Meter, budget: ConnectionBudget, attributes: Attributes): () => void {
  const open = meter.createObservableGauge("tenantry.db.connections.open", {
    description: "Database connections open or opening, all tenants together.",
  });
  const inUse = meter.createObservableGauge("tenantry.db.connections.in_use", {
    description: "Database connections leased to calls.",
  });
  const waiting = meter.createObservableGauge("tenantry.db.connections.waiting", {
    description: "Calls waiting for a database connection.",
  });
  const tenants = meter.createObservableGauge("tenantry.db.tenants.connected", {
    description: "Tenants holding at least one database connection.",
  });
  const opened = meter.createObservableCounter("tenantry.db.connections.opened", {
    description: "Database connections opened since start.",
  });
  const coldOpens = meter.createObservableCounter("tenantry.db.cold_opens", {
    description: "Connections opened for a tenant that had none open (a cold tenant's first call).",
  });
  const poolOpen = meter.createObservableGauge("tenantry.db.pool.connections.open", {
    description: "Connections open or opening to one pool database, shared by its pooled tenants (also counted in tenantry.db.connections.open).",
  });
  const poolInUse = meter.createObservableGauge("tenantry.db.pool.connections.in_use", {
    description: "Connections to one pool database leased to calls.",
  });
  const poolWaiting = meter.createObservableGauge("tenantry.db.pool.connections.waiting", {
    description: "Calls of one pool database's tenants waiting for one of its connections.",
  });
  const poolTenants = meter.createObservableGauge("tenantry.db.pool.tenants.connected", {
    description: "Pooled tenants of one pool database holding a lease of its connections.",
  });
  const observables = [open, inUse, waiting, tenants, opened, coldOpens, poolOpen, poolInUse, poolWaiting, poolTenants];
  const callback = (result: BatchObservableResult) => {
    const stats = budget.stats();
    result.observe(open, stats.open, attributes);
    result.observe(inUse, stats.inUse, attributes);
    result.observe(waiting, stats.waiting, attributes);
    result.observe(tenants, stats.tenants, attributes);
    result.observe(opened, stats.opened, attributes);
    result.observe(coldOpens, stats.coldOpens, attributes);
    for (const pool of budget.poolDatabaseStats()) {
      const poolAttributes = { ...attributes, pool_database: pool.database, server: pool.server };
      result.observe(poolOpen, pool.open, poolAttributes);
      result.observe(poolInUse, pool.inUse, poolAttributes);
      result.observe(poolWaiting, pool.waiting, poolAttributes);
      result.observe(poolTenants, pool.tenants, poolAttributes);
    }
  };
  meter.addBatchObservableCallback(callback, observables);
  return () => meter.removeBatchObservableCallback(callback, observables);
}
