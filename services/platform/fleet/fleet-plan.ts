import { isCurrent, type CatalogMark, type LedgerEntry } from "../stores/index.ts";

/** One tenant × service a fleet migration goes through. */
export interface MigrationPair {
  tenantId: string;
  service: string;
  /** The version the ledger has; empty for none. */
  from: string;
  /** Whether the schema is not known to be at the newest version (for Auth: with the current permission catalog). */
  behind: boolean;
}

/** What a fleet migration goes through. */
export interface FleetPlan {
  /** By cluster, each tenant's pairs, tenants in the ledger's order. */
  byCluster: Map<string, MigrationPair[][]>;
  /** How many pairs there are in all. */
  total: number;
}

/**
 * Plans a fleet migration from the ledger alone, without connecting to any
 * tenant database: for each tenant and each of `services`, whether its
 * schema is behind `latest` (never recorded, failed last time, at another
 * version, or for the service of `catalog` without the current catalog
 * merged), grouped by the tenant's cluster. With `onlyBehind`, the pairs
 * that are current are left out, and the tenants left with none.
 */
export function planFleetMigration(
  ledger: Map<string, { cluster: string; entries: Map<string, LedgerEntry> }>,
  services: string[],
  latest: Map<string, string>,
  onlyBehind: boolean,
  catalog?: CatalogMark,
): FleetPlan {
  const byCluster = new Map<string, MigrationPair[][]>();
  let total = 0;
  for (const [tenantId, { cluster, entries }] of ledger) {
    let pairs = services.map((service): MigrationPair => {
      const entry = entries.get(service);
      return { tenantId, service, from: entry?.version ?? "", behind: !isCurrent(service, entry, latest.get(service), catalog) };
    });
    if (onlyBehind) {
      pairs = pairs.filter((pair) => pair.behind);
    }
    if (pairs.length > 0) {
      total += pairs.length;
      const tenants = byCluster.get(cluster) ?? [];
      tenants.push(pairs);
      byCluster.set(cluster, tenants);
    }
  }
  return { byCluster, total };
}
