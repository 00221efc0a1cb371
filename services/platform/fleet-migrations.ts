import { Code, ConnectError } from "@connectrpc/connect";
import type { MikroORM } from "@mikro-orm/postgresql";
import { MigrationOutcome } from "../../gen/tenantry/platform/v1/fleet_service_pb.js";
import { Tier } from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import { checkTenantId, type Logger } from "../mesh/index.ts";
import type { SchemaServices } from "./schema-services.ts";
import { tierName } from "./stores/tenant-store.ts";
import { checkTier } from "./tenant-records.ts";

export { MigrationOutcome };

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
  error: string;
  totals: MigrationTotals;
}

/** The fleet's state for one service. */
export interface ServiceFleetState {
  service: string;
  latestVersion: string;
  current: number;
  behind: number;
  failed: number;
  failedTenants: { tenantId: string; version: string; error: string; attempts: number; attemptedAt: Date }[];
}

interface Pair {
  tenantId: string;
  service: string;
  from: string;
  behind: boolean;
}

/**
 * Fleet-wide schema migrations driven from the ledger: who is behind is
 * known without connecting to any tenant database; each tenant × service is
 * migrated through the service's own Migrate RPC, with bounded concurrency
 * per cluster, and its outcome recorded as it completes.
 */
export class FleetMigrations {
  readonly #orm: MikroORM;
  readonly #schemas: SchemaServices;
  readonly #migrateTimeoutMs: number;
  readonly #log: Logger;
  #running = 0;

  constructor(options: { orm: MikroORM; schemas: SchemaServices; migrateTimeoutMs: number; log: Logger }) {
    this.#orm = options.orm;
    this.#schemas = options.schemas;
    this.#migrateTimeoutMs = options.migrateTimeoutMs;
    this.#log = options.log;
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
    const latest = await this.#schemas.latestVersions({ fresh: true });
    const em = this.#orm.em.fork();
    const conditions = ["t.status in ('active', 'suspended')"];
    const values: unknown[] = [];
    if (tenantIds.length > 0) {
      conditions.push("t.id in (?)");
      values.push(tenantIds);
    }
    if (tier !== undefined) {
      conditions.push("t.tier = ?");
      values.push(tier);
    }
    if (selection.cluster !== "") {
      conditions.push("t.cluster = ?");
      values.push(selection.cluster);
    }
    const rows = await em.execute<{ id: string; cluster: string; service: string | null; version: string | null; status: string | null }[]>(
      `select t.id, t.cluster, l.service, l.version, l.status
       from platform.tenants t left join platform.tenant_schema_versions l on l.tenant_id = t.id
       where ${conditions.join(" and ")} order by t.id`,
      values,
    );
    const byTenant = new Map<string, { cluster: string; ledger: Map<string, { version: string; status: string }> }>();
    for (const row of rows) {
      const tenant = byTenant.get(row.id) ?? { cluster: row.cluster, ledger: new Map() };
      byTenant.set(row.id, tenant);
      if (row.service !== null) {
        tenant.ledger.set(row.service, { version: row.version ?? "", status: row.status ?? "" });
      }
    }
    const byCluster = new Map<string, Pair[][]>();
    let total = 0;
    for (const [tenantId, { cluster, ledger }] of byTenant) {
      let pairs: Pair[] = this.#schemas.entries.map(({ name }) => {
        const entry = ledger.get(name);
        return { tenantId, service: name, from: entry?.version ?? "", behind: entry === undefined || entry.status !== "succeeded" || entry.version !== latest.get(name) };
      });
      if (selection.onlyBehind) {
        pairs = pairs.filter((p) => p.behind);
      }
      if (pairs.length > 0) {
        total += pairs.length;
        byCluster.set(cluster, [...(byCluster.get(cluster) ?? []), pairs]);
      }
    }

    const totals: MigrationTotals = { total, done: 0, migrated: 0, current: 0, failed: 0 };
    const ready: MigrationEvent[] = [];
    let wake: (() => void) | undefined;
    const emit = (pair: Pair, outcome: MigrationOutcome, detail: Partial<MigrationEvent> = {}) => {
      totals.done++;
      if (outcome === MigrationOutcome.MIGRATED) totals.migrated++;
      else if (outcome === MigrationOutcome.FAILED) totals.failed++;
      else if (outcome !== MigrationOutcome.WOULD_MIGRATE) totals.current++;
      ready.push({ tenantId: pair.tenantId, service: pair.service, outcome, fromVersion: pair.from, toVersion: latest.get(pair.service) ?? "", applied: [], error: "", ...detail, totals: { ...totals } });
      wake?.();
    };
    const runPair = async (pair: Pair) => {
      if (!pair.behind) {
        return emit(pair, MigrationOutcome.SKIPPED, { toVersion: pair.from });
      }
      if (selection.dryRun) {
        return emit(pair, MigrationOutcome.WOULD_MIGRATE);
      }
      const client = this.#schemas.entries.find((e) => e.name === pair.service)!.client;
      try {
        const result = await client.migrate({ tenantId: pair.tenantId }, { timeoutMs: this.#migrateTimeoutMs, signal });
        await this.#recordSuccess(pair, result.version);
        emit(pair, result.applied.length > 0 ? MigrationOutcome.MIGRATED : MigrationOutcome.ALREADY_CURRENT, { toVersion: result.version, applied: result.applied });
      } catch (error) {
        if (signal.aborted) {
          return;
        }
        const message = ConnectError.from(error).rawMessage;
        await this.#recordFailure(pair, message);
        this.#log.warn({ tenantId: pair.tenantId, service: pair.service, error: message }, "tenant migration failed");
        emit(pair, MigrationOutcome.FAILED, { toVersion: pair.from, error: message });
      }
    };
    const workers = [...byCluster.values()].flatMap((tenants) => {
      let next = 0;
      return Array.from({ length: Math.min(concurrency, tenants.length) }, async () => {
        while (next < tenants.length && !signal.aborted) {
          for (const pair of tenants[next++]!) {
            await runPair(pair);
          }
        }
      });
    });
    let finished = false;
    const all = Promise.all(workers).finally(() => {
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

  /** The fleet's state per service, from the ledger. */
  async status(): Promise<ServiceFleetState[]> {
    const em = this.#orm.em.fork();
    const latest = await this.#schemas.latestVersions({ fresh: true }).catch(async () => {
      const rows = await em.execute<{ name: string; latest_version: string }[]>("select name, latest_version from platform.schema_services");
      return new Map(rows.map((r) => [r.name, r.latest_version]));
    });
    return Promise.all(
      this.#schemas.entries.map(async ({ name }) => {
        const latestVersion = latest.get(name) ?? "";
        const [counts] = await em.execute<{ current: number; behind: number; failed: number }[]>(
          `select count(*) filter (where l.status = 'succeeded' and l.version = ?)::int as current,
                  count(*) filter (where l.status is null or (l.status = 'succeeded' and l.version <> ?))::int as behind,
                  count(*) filter (where l.status = 'failed')::int as failed
           from platform.tenants t left join platform.tenant_schema_versions l on l.tenant_id = t.id and l.service = ?
           where t.status in ('active', 'suspended')`,
          [latestVersion, latestVersion, name],
        );
        const failed = await em.execute<{ tenant_id: string; version: string; error: string | null; attempts: number; attempted_at: string | Date }[]>(
          `select l.tenant_id, l.version, l.error, l.attempts, l.attempted_at from platform.tenant_schema_versions l
           join platform.tenants t on t.id = l.tenant_id and t.status in ('active', 'suspended')
           where l.service = ? and l.status = 'failed' order by l.attempted_at desc limit 100`,
          [name],
        );
        return {
          service: name,
          latestVersion,
          ...counts!,
          failedTenants: failed.map((f) => ({ tenantId: f.tenant_id, version: f.version, error: f.error ?? "", attempts: f.attempts, attemptedAt: new Date(f.attempted_at) })),
        };
      }),
    );
  }

  async #recordSuccess(pair: Pair, version: string): Promise<void> {
    await this.#orm.em.fork().execute(
      `insert into platform.tenant_schema_versions (tenant_id, service, version, status, error, attempts, attempted_at, updated_at)
       values (?, ?, ?, 'succeeded', null, 1, now(), now())
       on conflict (tenant_id, service) do update set version = excluded.version, status = 'succeeded', error = null,
         attempts = platform.tenant_schema_versions.attempts + 1, attempted_at = now(), updated_at = now()`,
      [pair.tenantId, pair.service, version],
    );
  }

  async #recordFailure(pair: Pair, error: string): Promise<void> {
    await this.#orm.em.fork().execute(
      `insert into platform.tenant_schema_versions (tenant_id, service, version, status, error, attempts, attempted_at, updated_at)
       values (?, ?, ?, 'failed', ?, 1, now(), now())
       on conflict (tenant_id, service) do update set status = 'failed', error = excluded.error,
         attempts = platform.tenant_schema_versions.attempts + 1, attempted_at = now()`,
      [pair.tenantId, pair.service, pair.from, error],
    );
  }
}
