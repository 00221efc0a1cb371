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

/** How {@link runPoolBatches} spreads the pooled tenants of a fleet migration over their pool databases. */
export interface PoolSpread {
  /** Batches of one pool database run at once, at most. */
  perPool: number;
  /** Batches run at once in all, over every pool database. */
  total: number;
  /** The most tenants in one batch. */
  maxBatch: number;
  /** Whether to stop taking batches (the run was stopped). */
  stopped: () => boolean;
}

/**
 * Runs the tenants of each pool database in batches (`run` takes one batch,
 * a few tenants, and settles once they are done), `spread.total` batches at
 * once in all and `spread.perPool` at once of any one pool database. A pool
 * database's tenants are cut into batches of at most `spread.maxBatch`, as
 * many as `spread.perPool` would take at once. Each batch that ends makes
 * room for the next one of the pool database with the fewest running (the
 * one with the most tenants left among those), so that the batches running
 * at once are spread evenly over the pool databases and each stays with
 * about as many as before: a service migrating them keeps about as many
 * connections to each pool database, and in all no more than `total`
 * needs, rather than closing the connections of one pool database to open
 * some to another.
 */
export async function runPoolBatches<T>(pools: T[][], spread: PoolSpread, run: (batch: T[]) => Promise<void>): Promise<void> {
  const states = pools
    .filter((tenants) => tenants.length > 0)
    .map((tenants) => ({ tenants, next: 0, running: 0, batch: Math.max(1, Math.min(spread.maxBatch, Math.ceil(tenants.length / spread.perPool))) }));
  /** The pool database whose next batch goes now; undefined when none may take one more. */
  const nextPool = () => {
    let best: (typeof states)[number] | undefined;
    for (const state of states) {
      if (state.next >= state.tenants.length || state.running >= spread.perPool) {
        continue;
      }
      if (best === undefined || state.running < best.running || (state.running === best.running && state.tenants.length - state.next > best.tenants.length - best.next)) {
        best = state;
      }
    }
    return best;
  };
  const batches = states.reduce((n, s) => n + Math.min(spread.perPool, Math.ceil(s.tenants.length / s.batch)), 0);
  await Promise.all(
    Array.from({ length: Math.min(spread.total, batches) }, async () => {
      // A worker stops when every pool database left is running as many batches as it may: those go on with its tenants.
      for (let state = nextPool(); state !== undefined && !spread.stopped(); state = nextPool()) {
        const taken = state.tenants.slice(state.next, state.next + state.batch);
        state.next += taken.length;
        state.running++;
        try {
          await run(taken);
        } finally {
          state.running--;
        }
      }
    }),
  );
}
