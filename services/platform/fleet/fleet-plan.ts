import { isCurrent, type CatalogMark, type LedgerTenant } from "../stores/index.ts";

/** One tenant × service a fleet migration goes through. */
export interface MigrationPair {
  tenantId: string;
  service: string;
  /** The version the ledger has; empty for none. */
  from: string;
  /** Whether the schema is not known to be at the newest version (for Auth: with the current permission catalog). */
  behind: boolean;
}

/**
 * Tenants a fleet migration goes through side by side, each group with
 * its own bound on how many at once: the dedicated tenants of a cluster,
 * or the pooled tenants of one pool database.
 */
export interface FleetGroup {
  cluster: string;
  /** The pool database of a group of pooled tenants; undefined for a cluster's dedicated tenants. */
  poolDatabase?: string;
  /** Each tenant's pairs, tenants in the ledger's order. */
  tenants: MigrationPair[][];
}

/** What a fleet migration goes through. */
export interface FleetPlan {
  /** By group key: a cluster's name for its dedicated tenants, `<cluster>/<pool database>` for pooled ones. */
  groups: Map<string, FleetGroup>;
  /** How many pairs there are in all. */
  total: number;
}

/**
 * Plans a fleet migration from the ledger alone, without connecting to any
 * tenant database: for each tenant and each of `services`, whether its
 * schema is behind `latest` (never recorded, failed last time, at another
 * version, or for the service of `catalog` without the current catalog
 * merged), grouped by the tenant's cluster, and pooled tenants by their
 * pool database. With `onlyBehind`, the pairs that are current are left
 * out, and the tenants left with none.
 */
export function planFleetMigration(ledger: Map<string, LedgerTenant>, services: string[], latest: Map<string, string>, onlyBehind: boolean, catalog?: CatalogMark): FleetPlan {
  const groups = new Map<string, FleetGroup>();
  let total = 0;
  for (const [tenantId, { cluster, poolDatabase, entries }] of ledger) {
    let pairs = services.map((service): MigrationPair => {
      const entry = entries.get(service);
      return { tenantId, service, from: entry?.version ?? "", behind: !isCurrent(service, entry, latest.get(service), catalog) };
    });
    if (onlyBehind) {
      pairs = pairs.filter((pair) => pair.behind);
    }
    if (pairs.length > 0) {
      total += pairs.length;
      const key = poolDatabase === undefined ? cluster : `${cluster}/${poolDatabase}`;
      const group = groups.get(key) ?? { cluster, ...(poolDatabase === undefined ? {} : { poolDatabase }), tenants: [] };
      group.tenants.push(pairs);
      groups.set(key, group);
    }
  }
  return { groups, total };
}
