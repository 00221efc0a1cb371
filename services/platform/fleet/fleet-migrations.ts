import { Code, ConnectError } from "@connectrpc/connect";
import type { MikroORM } from "@mikro-orm/postgresql";
import { setTimeout as sleep } from "node:timers/promises";
import { MigrationOutcome } from "../../../gen/tenantry/platform/v1/fleet_service_pb.js";
import { Tier } from "../../../gen/tenantry/platform/v1/platform_service_pb.js";
import { checkTenantId, type Logger } from "../../mesh/index.ts";
import { meshCatalogOf } from "../permission-catalog.ts";
import { catalogMarkOf, latestVersionsOf, type SchemaServices } from "../schema-services.ts";
import {
  countSchemaStates,
  failedMigrations,
  findRunningMove,
  ledgerOfServedTenants,
  recordedSchemaServices,
  recordManyMigrated,
  recordMigrated,
  recordMigrationFailure,
  tierName,
  type FailedMigration,
  type SchemaStateCounts,
} from "../stores/index.ts";
import { checkTier } from "../tenant-messages.ts";
import { planFleetMigration, type MigrationPair } from "./fleet-plan.ts";

export { MigrationOutcome };

/** How often a migration waiting for a tenant's move looks whether it has ended. */
const movePollMs = 500;

/** Which tenants a fleet migration takes. */
export interface FleetSelection {
  tenantIds: string[];
  tier: Tier;
  cluster: string;
  onlyBehind: boolean;
  concurrencyPerCluster: number;
  dryRun: boolean;
}

/** Running totals of a fleet migration. */
export interface MigrationTotals {
  total: number;
  done: number;
  migrated: number;
  current: number;
  failed: number;
}

/** One tenant × service result. */
export interface MigrationEvent {
  tenantId: string;
  service: string;
  outcome: MigrationOutcome;
  fromVersion: string;
  toVersion: string;
  applied: string[];
  addedPermissions: string[];
  error: string;
  totals: MigrationTotals;
}

/** The fleet's state for one service: how many tenants are current, behind or failed, and the last failures. */
export interface ServiceFleetState extends SchemaStateCounts {
  service: string;
  latestVersion: string;
  failedTenants: FailedMigration[];
}

/**
 * Fleet-wide schema migrations driven from the ledger: who is behind is
 * known without connecting to any tenant database; each tenant × service is
 * migrated through the service's own Migrate RPC, with bounded concurrency
 * per cluster (and per pool database for pooled tenants), and its outcome
 * recorded as it completes. Auth's Migrate
 * also gets the permission catalog every service declares, and the ledger
 * records which catalog it merged, so that a tenant whose catalog is not
 * the current one is behind on Auth.
 */
export class FleetMigrations {
  readonly #orm: MikroORM;
  readonly #schemas: SchemaServices;
  readonly #migrateTimeoutMs: number;
  readonly #log: Logger;
  readonly #prepare: ((tenantId: string, service: string) => Promise<void>) | undefined;
  readonly #poolConcurrency: number;
  #running = 0;

  /**
   * `prepare` readies a tenant for a service's first migration of its
   * schema (a pooled tenant's schema is made by Platform, not by the
   * service); by default nothing. `poolConcurrency` (by default 8, what a
   * service leases of a pool database at most) is how many tenants of one
   * pool database are migrated at once, when the selection asks for fewer.
   */
  constructor(options: {
    orm: MikroORM;
    schemas: SchemaServices;
    migrateTimeoutMs: number;
    log: Logger;
    prepare?: (tenantId: string, service: string) => Promise<void>;
    poolConcurrency?: number;
  }) {
    this.#orm = options.orm;
    this.#schemas = options.schemas;
    this.#migrateTimeoutMs = options.migrateTimeoutMs;
    this.#log = options.log;
    this.#prepare = options.prepare;
    this.#poolConcurrency = options.poolConcurrency ?? 8;
  }

  /** Fleet migrations running now. */
  get running(): number {
    return this.#running;
  }

  /** Runs a fleet migration, yielding one event per tenant × service as each finishes. Stops early when `signal` aborts. */
  async *migrate(selection: FleetSelection, signal: AbortSignal): AsyncGenerator<MigrationEvent> {
    this.#running++;
    try {
      yield* this.#migrate(selection, signal);
    } finally {
      this.#running--;
    }
  }

  async *#migrate(selection: FleetSelection, signal: AbortSignal): AsyncGenerator<MigrationEvent> {
    const tenantIds = selection.tenantIds.map((id) => checkTenantId(id, "tenant_ids"));
    const tier = selection.tier === Tier.UNSPECIFIED ? undefined : tierName(checkTier(selection.tier));
    if (selection.concurrencyPerCluster < 0) {
      throw new ConnectError("concurrency_per_cluster cannot be negative", Code.InvalidArgument);
    }
    const concurrency = Math.min(selection.concurrencyPerCluster || 4, 32);
    const described = await this.#schemas.describe({ fresh: true });
    const latest = latestVersionsOf(described);
    const catalog = meshCatalogOf(described.values());
    const catalogMark = catalogMarkOf(described);
    const ledger = await ledgerOfServedTenants(this.#orm.em.fork(), { tenantIds, tier, cluster: selection.cluster });
    const services = this.#schemas.entries.map((e) => e.name);
    const { groups, total } = planFleetMigration(ledger, services, latest, selection.onlyBehind, catalogMark);

    const totals: MigrationTotals = { total, done: 0, migrated: 0, current: 0, failed: 0 };
    const ready: MigrationEvent[] = [];
    let wake: (() => void) | undefined;
    const emit = (pair: MigrationPair, outcome: MigrationOutcome, detail: Partial<MigrationEvent> = {}) => {
      totals.done++;
      if (outcome === MigrationOutcome.MIGRATED) totals.migrated++;
      else if (outcome === MigrationOutcome.FAILED) totals.failed++;
      else if (outcome !== MigrationOutcome.WOULD_MIGRATE) totals.current++;
      ready.push({ tenantId: pair.tenantId, service: pair.service, outcome, fromVersion: pair.from, toVersion: latest.get(pair.service) ?? "", applied: [], addedPermissions: [], error: "", ...detail, totals: { ...totals } });
      wake?.();
    };
    const record = this.#batchedRecorder();
    /** Pairs of tenants being moved when their turn came: run at the end, each once its tenant's move has ended. */
    const waitingForMoves: MigrationPair[] = [];
    const runPair = async (pair: MigrationPair, afterMoves = false) => {
      if (!pair.behind) {
        return emit(pair, MigrationOutcome.SKIPPED, { toVersion: pair.from });
      }
      if (selection.dryRun) {
        return emit(pair, MigrationOutcome.WOULD_MIGRATE);
      }
      if (!afterMoves && (await findRunningMove(this.#orm.em.fork(), pair.tenantId)) !== null) {
        // Its schemas must stay as the move's target was made (the move checks that they did):
        // migrated once the move has ended, after the other tenants.
        waitingForMoves.push(pair);
        return;
      }
      const client = this.#schemas.entries.find((e) => e.name === pair.service)!.client;
      const keepsCatalog = pair.service === catalogMark?.service;
      try {
        if (pair.from === "") {
          // Never migrated for this service: a service added since the tenant was made.
          await this.#prepare?.(pair.tenantId, pair.service);
        }
        const result = await client.migrate({ tenantId: pair.tenantId, permissions: keepsCatalog ? catalog.permissions : [] }, { timeoutMs: this.#migrateTimeoutMs, signal });
        await record({
          tenantId: pair.tenantId,
          service: pair.service,
          version: result.version,
          ...(keepsCatalog ? { permissionsDigest: catalog.digest } : {}),
        });
        const changed = result.applied.length > 0 || result.addedPermissions.length > 0;
        emit(pair, changed ? MigrationOutcome.MIGRATED : MigrationOutcome.ALREADY_CURRENT, {
          toVersion: result.version,
          applied: result.applied,
          addedPermissions: result.addedPermissions,
        });
      } catch (error) {
        if (signal.aborted) {
          return;
        }
        const message = ConnectError.from(error).rawMessage;
        await recordMigrationFailure(this.#orm.em.fork(), { tenantId: pair.tenantId, service: pair.service, version: pair.from, error: message });
        this.#log.warn({ tenantId: pair.tenantId, service: pair.service, error: message }, "tenant migration failed");
        emit(pair, MigrationOutcome.FAILED, { toVersion: pair.from, error: message });
      }
    };
    const workers = [...groups.values()].flatMap(({ poolDatabase, tenants }) => {
      let next = 0;
      // A pool database's tenants share its connections: each migration is a few statements on one
      // of them, no connection of its own, so a pool database takes more at once than a cluster.
      const width = poolDatabase === undefined ? concurrency : Math.max(concurrency, this.#poolConcurrency);
      return Array.from({ length: Math.min(width, tenants.length) }, async () => {
        while (next < tenants.length && !signal.aborted) {
          for (const pair of tenants[next++]!) {
            await runPair(pair);
          }
        }
      });
    });
    const afterMoves = Promise.all(workers).then(async () => {
      for (const pair of waitingForMoves) {
        if (!(await this.#untilNotMoving(pair.tenantId, signal))) {
          return;
        }
        await runPair(pair, true);
      }
    });
    let finished = false;
    const all = afterMoves.finally(() => {
      finished = true;
      wake?.();
    });
    while (!finished || ready.length > 0) {
      const event = ready.shift();
      if (event !== undefined) {
        yield event;
        continue;
      }
      await new Promise<void>((resolve) => (wake = resolve));
      wake = undefined;
    }
    await all;
  }

  /**
   * Records successes in the ledger in batches: the first is written at
   * once, and those that arrive while a write is under way go together in
   * the next. Each caller's promise settles once its own entry is written;
   * when a batch fails, its entries are written one by one, so that only
   * the one that cannot be written fails.
   */
  #batchedRecorder(): (entry: Parameters<typeof recordMigrated>[1]) => Promise<void> {
    type Waiting = { entry: Parameters<typeof recordMigrated>[1]; resolve: () => void; reject: (error: unknown) => void };
    let queued: Waiting[] = [];
    let writing = false;
    const writeQueued = async () => {
      writing = true;
      while (queued.length > 0) {
        const batch = queued;
        queued = [];
        try {
          await recordManyMigrated(this.#orm.em.fork(), batch.map((w) => w.entry));
          batch.forEach((w) => w.resolve());
        } catch {
          for (const w of batch) {
            await recordMigrated(this.#orm.em.fork(), w.entry).then(w.resolve, w.reject);
          }
        }
      }
      writing = false;
    };
    return (entry) =>
      new Promise<void>((resolve, reject) => {
        queued.push({ entry, resolve, reject });
        if (!writing) {
          void writeQueued();
        }
      });
  }

  /** Waits while the tenant is being moved; false when `signal` aborted first. */
  async #untilNotMoving(tenantId: string, signal: AbortSignal): Promise<boolean> {
    while (!signal.aborted && (await findRunningMove(this.#orm.em.fork(), tenantId)) !== null) {
      await sleep(movePollMs, undefined, { signal }).catch(() => undefined);
    }
    return !signal.aborted;
  }

  /** The fleet's state per service, from the ledger. */
  async status(): Promise<ServiceFleetState[]> {
    const em = this.#orm.em.fork();
    const described = await this.#schemas.describe({ fresh: true }).catch(() => recordedSchemaServices(em));
    const known = latestVersionsOf(described);
    const latest = new Map(this.#schemas.entries.map(({ name }) => [name, known.get(name) ?? ""]));
    const counts = await countSchemaStates(em, latest, catalogMarkOf(described));
    return Promise.all(
      [...latest].map(async ([service, latestVersion]) => ({
        service,
        latestVersion,
        ...counts.get(service)!,
        failedTenants: await failedMigrations(em, service, 100),
      })),
    );
  }
}
