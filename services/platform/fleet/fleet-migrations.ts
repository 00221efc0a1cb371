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
  movingTenantIds,
  recordedSchemaServices,
  recordManyMigrated,
  recordMigrated,
  recordMigrationFailure,
  tierName,
  type FailedMigration,
  type SchemaStateCounts,
} from "../stores/index.ts";
import { checkTier } from "../tenant-messages.ts";
import { planFleetMigration, runPoolBatches, type MigrationPair } from "./fleet-plan.ts";

export { MigrationOutcome };

/** The most pooled tenants a service is asked to migrate in one MigrateMany. */
const maxBatch = 50;

/** A service's answer for one tenant: what it did, or why it failed. */
type MigrateAnswer = { version: string; applied: string[]; addedPermissions: string[] } | ConnectError;

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
  readonly #pooledConcurrency: number;
  /** Services that answered MigrateMany UNIMPLEMENTED (from before it): their tenants go through Migrate one by one. */
  readonly #oneByOne = new Set<string>();
  #running = 0;

  /**
   * `prepare` readies a tenant for a service's first migration of its
   * schema (a pooled tenant's schema is made by Platform, not by the
   * service); by default nothing. `poolConcurrency` (by default 8, what a
   * service leases of a pool database at most) is how many tenants of one
   * pool database are migrated at once, when the selection asks for fewer;
   * `pooledConcurrency` (by default 16) how many pooled tenants are
   * migrated at once in all, over every pool database (one pool database
   * takes its own width all the same): what a service's connections hold
   * beside its traffic.
   */
  constructor(options: {
    orm: MikroORM;
    schemas: SchemaServices;
    migrateTimeoutMs: number;
    log: Logger;
    prepare?: (tenantId: string, service: string) => Promise<void>;
    poolConcurrency?: number;
    pooledConcurrency?: number;
  }) {
    this.#orm = options.orm;
    this.#schemas = options.schemas;
    this.#migrateTimeoutMs = options.migrateTimeoutMs;
    this.#log = options.log;
    this.#prepare = options.prepare;
    this.#poolConcurrency = options.poolConcurrency ?? 8;
    this.#pooledConcurrency = options.pooledConcurrency ?? 16;
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
    const isMoving = this.#batchedMoveCheck();
    /** Pairs of tenants being moved when their turn came: run at the end, each once its tenant's move has ended. */
    const waitingForMoves: MigrationPair[] = [];
    /**
     * Whether a pair is for its service to migrate now: the outcome of one
     * that is not is emitted, and one whose tenant is being moved is put
     * aside until the move ends.
     */
    const toMigrate = async (pair: MigrationPair, afterMoves: boolean): Promise<boolean> => {
      if (!pair.behind) {
        emit(pair, MigrationOutcome.SKIPPED, { toVersion: pair.from });
        return false;
      }
      if (selection.dryRun) {
        emit(pair, MigrationOutcome.WOULD_MIGRATE);
        return false;
      }
      if (!afterMoves && (await isMoving(pair.tenantId))) {
        // Its schemas must stay as the move's target was made (the move checks that they did):
        // migrated once the move has ended, after the other tenants.
        waitingForMoves.push(pair);
        return false;
      }
      return true;
    };
    const clientOf = (service: string) => this.#schemas.entries.find((e) => e.name === service)!.client;
    const permissionsOf = (service: string) => (service === catalogMark?.service ? catalog.permissions : []);
    /** Readies a tenant never migrated for the service (a service added since the tenant was made); its failure, if it fails. */
    const prepare = async (pair: MigrationPair): Promise<ConnectError | undefined> => {
      try {
        if (pair.from === "") {
          await this.#prepare?.(pair.tenantId, pair.service);
        }
        return undefined;
      } catch (error) {
        return ConnectError.from(error);
      }
    };
    /** The service's answer for one pair through Migrate; undefined when the fleet migration was stopped meanwhile. */
    const migrateOne = async (pair: MigrationPair): Promise<MigrateAnswer | undefined> => {
      const unprepared = await prepare(pair);
      if (unprepared !== undefined) {
        return unprepared;
      }
      try {
        return await clientOf(pair.service).migrate({ tenantId: pair.tenantId, permissions: permissionsOf(pair.service) }, { timeoutMs: this.#migrateTimeoutMs, signal });
      } catch (error) {
        return signal.aborted ? undefined : ConnectError.from(error);
      }
    };
    /** Records a pair's answer in the ledger and emits its outcome. */
    const settle = async (pair: MigrationPair, answer: MigrateAnswer | undefined) => {
      if (answer === undefined) {
        return;
      }
      let failure = answer instanceof ConnectError ? answer : undefined;
      if (!(answer instanceof ConnectError)) {
        try {
          await record({
            tenantId: pair.tenantId,
            service: pair.service,
            version: answer.version,
            ...(pair.service === catalogMark?.service ? { permissionsDigest: catalog.digest } : {}),
          });
          const changed = answer.applied.length > 0 || answer.addedPermissions.length > 0;
          return emit(pair, changed ? MigrationOutcome.MIGRATED : MigrationOutcome.ALREADY_CURRENT, {
            toVersion: answer.version,
            applied: answer.applied,
            addedPermissions: answer.addedPermissions,
          });
        } catch (error) {
          if (signal.aborted) {
            return;
          }
          failure = ConnectError.from(error);
        }
      }
      const message = failure!.rawMessage;
      await recordMigrationFailure(this.#orm.em.fork(), { tenantId: pair.tenantId, service: pair.service, version: pair.from, error: message });
      this.#log.warn({ tenantId: pair.tenantId, service: pair.service, error: message }, "tenant migration failed");
      emit(pair, MigrationOutcome.FAILED, { toVersion: pair.from, error: message });
    };
    const runPair = async (pair: MigrationPair, afterMoves = false) => {
      if (await toMigrate(pair, afterMoves)) {
        await settle(pair, await migrateOne(pair));
      }
    };
    /**
     * Migrates tenants of one pool database service after service: each
     * service gets those it has something to do for in one MigrateMany,
     * which migrates them one after another on the pool database's
     * connections, and each answer is settled as it arrives (a service
     * that does not know MigrateMany gets one Migrate each).
     */
    const runTenants = async (tenants: MigrationPair[][]) => {
      for (const service of services) {
        const pairs = tenants.flatMap((pairsOfTenant) => pairsOfTenant.filter((pair) => pair.service === service));
        const wanted = await Promise.all(pairs.map((pair) => toMigrate(pair, false)));
        const ready: MigrationPair[] = [];
        for (const [i, pair] of pairs.entries()) {
          if (!wanted[i]) {
            continue;
          }
          const unprepared = await prepare(pair);
          if (unprepared === undefined) {
            ready.push(pair);
          } else {
            await settle(pair, unprepared);
          }
        }
        if (ready.length === 0 || signal.aborted) {
          continue;
        }
        if (this.#oneByOne.has(service)) {
          for (const pair of ready) {
            await settle(pair, await migrateOne(pair));
          }
          continue;
        }
        const waiting = new Map(ready.map((pair) => [pair.tenantId, pair]));
        const settling: Promise<void>[] = [];
        let unanswered: ConnectError | undefined;
        try {
          const answers = clientOf(service).migrateMany(
            { tenantIds: ready.map((pair) => pair.tenantId), permissions: permissionsOf(service) },
            { timeoutMs: this.#migrateTimeoutMs * ready.length, signal },
          );
          for await (const { tenantId, result } of answers) {
            const pair = waiting.get(tenantId);
            if (pair === undefined) {
              continue;
            }
            waiting.delete(tenantId);
            const answer = result.case === "migrated" ? result.value : new ConnectError(result.value?.message ?? `${service} answered no result`, (result.value?.code ?? Code.Internal) as Code);
            settling.push(settle(pair, answer));
          }
        } catch (error) {
          if (signal.aborted) {
            await Promise.all(settling);
            return;
          }
          unanswered = ConnectError.from(error);
          if (unanswered.code === Code.Unimplemented && waiting.size === ready.length) {
            // A service from before MigrateMany: each tenant through Migrate, as before.
            this.#oneByOne.add(service);
            for (const pair of ready) {
              await settle(pair, await migrateOne(pair));
            }
            continue;
          }
        }
        for (const pair of waiting.values()) {
          settling.push(settle(pair, unanswered ?? new ConnectError(`${service} ended MigrateMany without an answer for tenant "${pair.tenantId}"`, Code.Internal)));
        }
        await Promise.all(settling);
      }
    };
    // A pool database's tenants share its connections: each migration is a few statements on one of
    // them, no connection of its own, so a pool database takes more at once than a cluster, and each
    // service gets a batch of its tenants in one call. The pool databases of the whole fleet together
    // take no more than the fleet's pooled width at once: a service's connections to them all come
    // from one budget, which would otherwise close one pool database's to open another's, on nearly
    // every migration (a server process started and its catalog caches filled for each).
    const width = Math.max(concurrency, this.#poolConcurrency);
    const pooled = runPoolBatches(
      [...groups.values()].filter((group) => group.poolDatabase !== undefined).map((group) => group.tenants),
      { perPool: width, total: Math.max(width, this.#pooledConcurrency), maxBatch, stopped: () => signal.aborted },
      runTenants,
    );
    const dedicated = [...groups.values()].filter((group) => group.poolDatabase === undefined).flatMap(({ tenants }) => {
      let next = 0;
      return Array.from({ length: Math.min(concurrency, tenants.length) }, async () => {
        while (next < tenants.length && !signal.aborted) {
          for (const pair of tenants[next++]!) {
            await runPair(pair);
          }
        }
      });
    });
    const afterMoves = Promise.all([pooled, ...dedicated]).then(async () => {
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

  /**
   * Says whether a tenant is being moved, from the moves under way as read
   * by a statement that starts after the question was asked: the questions
   * that arrive while a read is under way are answered together by the
   * next, so that tenants migrated side by side cost one read, not one each.
   */
  #batchedMoveCheck(): (tenantId: string) => Promise<boolean> {
    type Waiting = { tenantId: string; resolve: (moving: boolean) => void; reject: (error: unknown) => void };
    let queued: Waiting[] = [];
    let reading = false;
    const readQueued = async () => {
      reading = true;
      // The questions asked together (a batch of tenants) go in one read.
      await Promise.resolve();
      while (queued.length > 0) {
        const batch = queued;
        queued = [];
        try {
          const moving = await movingTenantIds(this.#orm.em.fork());
          batch.forEach((w) => w.resolve(moving.has(w.tenantId)));
        } catch (error) {
          batch.forEach((w) => w.reject(error));
        }
      }
      reading = false;
    };
    return (tenantId) =>
      new Promise<boolean>((resolve, reject) => {
        queued.push({ tenantId, resolve, reject });
        if (!reading) {
          void readQueued();
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
