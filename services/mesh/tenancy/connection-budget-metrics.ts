import type { Attributes, BatchObservableResult, Meter } from "@opentelemetry/api";
import type { ConnectionBudget } from "./connection-budget.ts";

/**
 * Publishes a connection budget's counters as metrics, read at each
 * collection (a scrape of `/metrics`): connections open, in use, calls
 * waiting for one, tenants connected, and connections opened and cold tenant
 * opens since start. Returns the function that stops publishing them.
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
  const observables = [open, inUse, waiting, tenants, opened, coldOpens];
  const callback = (result: BatchObservableResult) => {
    const stats = budget.stats();
    result.observe(open, stats.open, attributes);
    result.observe(inUse, stats.inUse, attributes);
    result.observe(waiting, stats.waiting, attributes);
    result.observe(tenants, stats.tenants, attributes);
    result.observe(opened, stats.opened, attributes);
    result.observe(coldOpens, stats.coldOpens, attributes);
  };
  meter.addBatchObservableCallback(callback, observables);
  return () => meter.removeBatchObservableCallback(callback, observables);
}
