import type { MikroORM } from "@mikro-orm/postgresql";
import pg from "pg";
import { createHash, randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger, SecretBox } from "../../mesh/index.ts";
import type { AdvisoryLocks } from "../advisory-locks.ts";
import type { ClusterRegistry } from "../cluster-registry.ts";
import type { SchemaServices } from "../schema-services.ts";
import { clusterStates, listClusters, listPoolDatabases, poolPasswordContext, poolStates } from "../stores/index.ts";
import { migrateDatabase, readSchemaVersions } from "../tenant-databases.ts";
import { namePrefixBounds } from "./name-prefix.ts";

/** Options of {@link PooledStock}. */
export interface PooledStockOptions {
  orm: MikroORM;
  clusters: ClusterRegistry;
  schemas: SchemaServices;
  locks: AdvisoryLocks;
  box: SecretBox;
  /** Ready slots kept in each pool database with room; 0 keeps none and drops those left. */
  size: number;
  /** How many pooled tenants one pool database holds at most: a full one keeps no slots. */
  poolMaxTenants: number;
  /** How long one service may take to migrate one slot. */
  migrateTimeoutMs: number;
  log: Logger;
}

/** The hex digits of a slot role's name that say which pool database keeps it. */
const poolTagLength = 8;
/** The hex digits of a slot role's name that say which schema versions it holds. */
const digestLength = 10;
/** The hex digits that tell slots apart; a slot's schemas are named with them. */
const idLength = 8;
/** What a slot role's name ends with while it is being built. */
const buildingMark = "_b";
/** The longest wait before asking services that did not answer for their versions again. */
const maxRetryMs = 30_000;
/**
 * How long no provisioning must have run in this process before a refill
 * migrates a slot: tenants arriving back to back leave no such gap, and
 * the stock then waits rather than compete with them for the same cores.
 */
const quietMs = 50;
/** The longest a refill waits for such a gap before it migrates a slot anyway. */
const maxQuietWaitMs = 10_000;

/** How a slot's role spells the schema versions it holds: a digest of every service's newest migration. */
function versionsDigest(versions: Map<string, string>): string {
  const sorted = [...versions].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return createHash("sha256").update(JSON.stringify(sorted)).digest("hex").slice(0, digestLength);
}

/**
 * What a slot's schemas are named with, `s_<id>_`: no tenant's prefix
 * (`t_<id>_`, see schema-generations.ts) starts so, nor the reverse.
 */
function slotSchemaPrefix(id: string): string {
  return `s_${id}_`;
}

/** One slot of a pool database's stock, as its role's name tells it. */
interface Slot {
  role: string;
  digest: string;
  id: string;
  ready: boolean;
}

/**
 * A few ready slots in every pool database with room: a NOLOGIN role
 * granted to the pool's login (to be taken on with SET ROLE only) and its
 * schema of every service, already migrated to the newest versions, so
 * that provisioning a pooled tenant renames one (`ALTER ROLE … RENAME`,
 * `ALTER SCHEMA … RENAME`: catalog-only) instead of creating the role and
 * schemas and having every service migrate them.
 *
 * The stock lives in the pool databases alone: a slot's role is named
 * `slot_<pool tag>_<versions digest>_<id>` (with `_b` at the end while it
 * is being built, and so never taken), its schemas `s_<id>_<service>`.
 * Taking one is a single transaction on the pool database (role and
 * schemas renamed, their versions read), under a transaction-scoped
 * advisory lock of the slot there, so that it is whole or not at all and
 * two takers, in one Platform or two, never take the same one. A take
 * never waits for the stock: with none at the newest versions, the
 * caller makes the role and schemas as before. Refills run in the
 * background, one pool database at a time under an advisory lock, once a
 * take leaves a stock at half its size or less, at start and every
 * sweep: they build what is missing as one batch and drop slots at other
 * versions (a service deployed with new
 * migrations), half-built, in a pool database that is full or not ready,
 * or on a cluster that no longer accepts tenants.
 */
export class PooledStock {
  readonly #options: PooledStockOptions;
  #refilling: Promise<void> | undefined;
  #again = false;
  /** Whether the refill asked for while one runs is to build every pool database's stock whole, not only those down to half. */
  #againFull = false;
  /** Whether a take since the last refill left a stock at half or less. */
  #low = false;
  #stopped = false;
  #retry: NodeJS.Timeout | undefined;
  #retryMs = 0;
  #provisioning = 0;
  /** How many provisionings have started in this process: a gap is quiet only if none started in it. */
  #started = 0;
  #quiet: (() => void)[] = [];

  constructor(options: PooledStockOptions) {
    this.#options = options;
  }

  /** How many ready slots each pool database with room keeps. */
  get size(): number {
    return this.#options.size;
  }

  /** What the names of a pool database's slot roles start with. */
  #prefixOf(pool: string): string {
    return `slot_${createHash("sha256").update(pool).digest("hex").slice(0, poolTagLength)}_`;
  }

  /** The slots of a pool database, by role name, read through `client` (any connection to the cluster). */
  async #list(client: pg.ClientBase, pool: string): Promise<Slot[]> {
    const prefix = this.#prefixOf(pool);
    const { rows } = await client.query<{ role: string }>("select rolname as role from pg_roles where rolname >= $1::name and rolname < $2::name order by rolname", namePrefixBounds(prefix));
    const pattern = new RegExp(`^${prefix}([0-9a-f]{${digestLength}})_([0-9a-f]{${idLength}})(${buildingMark})?$`);
    return rows.map(({ role }) => {
      const match = pattern.exec(role);
      return { role, digest: match?.[1] ?? "", id: match?.[2] ?? "", ready: match !== null && match[3] === undefined };
    });
  }

  /**
   * Makes a ready slot of pool database `pool` at the newest versions the
   * tenant's: its role renamed `target.role`, its schemas renamed with
   * `target.schemaPrefix`. Asks `newest` for the services' newest versions
   * only when the stock holds a ready slot at all. Returns them and the
   * versions the tenant's schemas hold (undefined, changing nothing, when
   * no slot is at those versions); undefined when the stock is dry, the
   * services do not answer, or the role or a schema name is taken already.
   */
  async take(
    cluster: string,
    pool: string,
    newest: () => Promise<Map<string, string> | undefined>,
    target: { role: string; schemaPrefix: string },
  ): Promise<{ latest: Map<string, string>; versions: Map<string, string> | undefined } | undefined> {
    if (this.size === 0) {
      return undefined;
    }
    const { clusters, schemas, log } = this.#options;
    const services = schemas.entries.map((e) => e.name);
    try {
      // Left as found: each transaction below ends with a commit or a rollback.
      return await clusters.inDatabaseKept(cluster, pool, async (client) => {
        const taken = await client.query("select 1 from pg_roles where rolname = $1", [target.role]);
        if (taken.rowCount !== 0) {
          // Taken or made by an earlier run, or someone else's: the next steps tell.
          return undefined;
        }
        const listed = (await this.#list(client, pool)).filter((slot) => slot.ready);
        if (listed.length === 0) {
          // A dry stock: the services are not asked for their versions (the caller makes the role and schemas).
          this.#low = true;
          return undefined;
        }
        const latest = await newest();
        if (latest === undefined) {
          return undefined;
        }
        const digest = versionsDigest(latest);
        const ready = listed.filter((slot) => slot.digest === digest);
        // This take leaves the stock at half or less (or found it empty): the provisioning's end starts a refill.
        this.#low ||= ready.length - 1 <= Math.floor(this.size / 2);
        for (const slot of ready) {
          await client.query("begin");
          try {
            const { rows } = await client.query<{ locked: boolean }>("select pg_try_advisory_xact_lock(hashtext($1)) as locked", [slotLockKey(slot.role)]);
            const present = rows[0]!.locked && (await client.query("select 1 from pg_roles where rolname = $1", [slot.role])).rowCount !== 0;
            if (!present) {
              // Another taker holds it, or had it first, or a refill dropped it.
              await client.query("rollback");
              continue;
            }
            await client.query(
              [
                `alter role ${pg.escapeIdentifier(slot.role)} rename to ${pg.escapeIdentifier(target.role)}`,
                ...services.map((s) => `alter schema ${pg.escapeIdentifier(slotSchemaPrefix(slot.id) + s)} rename to ${pg.escapeIdentifier(target.schemaPrefix + s)}`),
              ].join(";\n"),
            );
            const versions = await readSchemaVersions(client, services, target.schemaPrefix);
            if (!sameVersions(versions, latest)) {
              await client.query("rollback");
              log.warn({ cluster, pool, slot: slot.role }, "a slot of the stock does not hold the versions its name says; left to the next refill");
              continue;
            }
            await client.query("commit");
            log.info({ cluster, pool, slot: slot.role, role: target.role }, "took a slot of the pooled stock");
            return { latest, versions };
          } catch (error) {
            await client.query("rollback").catch(() => undefined);
            const code = (error as { code?: unknown }).code;
            if (code === "42710" || code === "42P06") {
              // The tenant's role or one of its schema names exists: not the stock's to decide.
              return undefined;
            }
            log.warn({ err: error, cluster, pool, slot: slot.role }, "could not take a slot of the pooled stock; trying another");
          }
        }
        return { latest, versions: undefined };
      });
    } catch (error) {
      log.warn({ err: error, cluster, pool }, "could not look into the pooled stock; making the tenant's role and schemas instead");
      return undefined;
    }
  }

  /**
   * Runs a provisioning. Refills wait for a gap of {@link quietMs} without
   * provisioning in this process before they migrate another slot (at most
   * {@link maxQuietWaitMs}), and one starts when a take leaves a stock low.
   */
  async whileProvisioning<T>(work: () => Promise<T>): Promise<T> {
    this.#provisioning++;
    this.#started++;
    try {
      return await work();
    } finally {
      if (--this.#provisioning === 0) {
        this.#quiet.splice(0).forEach((resume) => resume());
      }
      // Refilled once a take left a pool database's stock at half or less (or found it empty), not after every tenant.
      if (this.size > 0 && this.#low) {
        this.#low = false;
        this.refillInBackground({ onlyLow: true });
      }
    }
  }

  /**
   * Brings every pool database's stock to its size at the newest versions,
   * the missing slots of each built as one batch; with `onlyLow`, only the
   * stocks down to half their size or less (as after a take). A refill
   * asked for while one runs makes it go round once more; the promise
   * settles once no more is asked.
   */
  refill(options: { onlyLow?: boolean } = {}): Promise<void> {
    if (this.#refilling !== undefined) {
      this.#again = true;
      this.#againFull ||= options.onlyLow !== true;
      return this.#refilling;
    }
    let onlyLow = options.onlyLow === true;
    this.#refilling = (async () => {
      do {
        this.#again = false;
        await this.#refillAll(onlyLow);
        onlyLow = !this.#againFull;
        this.#againFull = false;
      } while (this.#again && !this.#stopped);
    })().finally(() => (this.#refilling = undefined));
    return this.#refilling;
  }

  /** Refills in the background (see {@link refill}); a failure is logged, and the next sweep tries again. */
  refillInBackground(options: { onlyLow?: boolean } = {}): void {
    if (!this.#stopped) {
      this.refill(options).catch((error: unknown) => this.#options.log.warn({ err: error }, "refilling the pooled stock failed; the next sweep tries again"));
    }
  }

  /** Stops refilling: the slot being migrated is finished, the rest of its batch dropped, no other started. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#retry);
    await this.#refilling?.catch(() => undefined);
  }

  async #refillAll(onlyLow: boolean): Promise<void> {
    const { orm, log, poolMaxTenants } = this.#options;
    const em = orm.em.fork();
    const clusters: { cluster: Awaited<ReturnType<typeof listClusters>>[number]["cluster"]; pools: Awaited<ReturnType<typeof listPoolDatabases>> }[] = [];
    for (const { cluster } of await listClusters(em)) {
      clusters.push({ cluster, pools: await listPoolDatabases(em, cluster.name) });
    }
    let latest: Map<string, string> | undefined;
    // Asked only when some pool database may keep a stock: before the first pooled tenant, a sweep asks no service.
    if (this.size > 0 && clusters.some(({ cluster, pools }) => cluster.state === clusterStates.accepting && pools.length > 0)) {
      latest = await this.#latestVersions();
      if (latest === undefined) {
        return;
      }
    }
    for (const { cluster, pools } of clusters) {
      for (const pool of pools) {
        if (this.#stopped) {
          return;
        }
        const roomy = cluster.state === clusterStates.accepting && pool.state === poolStates.ready && pool.tenantCount + pool.arriving < poolMaxTenants;
        const wanted = latest !== undefined && roomy ? this.size : 0;
        try {
          await this.#refillPool(cluster.name, pool, wanted, latest, onlyLow);
        } catch (error) {
          log.warn({ err: error, cluster: cluster.name, pool: pool.name }, "could not refill the pool database's stock; the next sweep tries again");
        }
      }
    }
  }

  /** The services' newest versions; undefined while they do not answer, with a refill tried again soon. */
  async #latestVersions(): Promise<Map<string, string> | undefined> {
    try {
      const latest = await this.#options.schemas.latestVersions();
      this.#retryMs = 0;
      return latest;
    } catch (error) {
      this.#retryMs = Math.min(Math.max(2 * this.#retryMs, 1000), maxRetryMs);
      const level = this.#retryMs < maxRetryMs ? "debug" : "warn";
      this.#options.log[level]({ err: error, retryInMs: this.#retryMs }, "the schema services do not answer; the pooled stock is refilled once they do");
      clearTimeout(this.#retry);
      this.#retry = setTimeout(() => this.refillInBackground(), this.#retryMs).unref();
      return undefined;
    }
  }

  /**
   * Resolves once no provisioning has run in this process for
   * {@link quietMs}, or after {@link maxQuietWaitMs} (or once stopped).
   */
  async #provisioningsEnded(): Promise<void> {
    const deadline = performance.now() + maxQuietWaitMs;
    for (;;) {
      const left = deadline - performance.now();
      if (left <= 0 || this.#stopped) {
        return;
      }
      if (this.#provisioning > 0) {
        await Promise.race([new Promise<void>((resume) => this.#quiet.push(resume)), sleep(left, undefined, { ref: false })]);
        continue;
      }
      const started = this.#started;
      await sleep(Math.min(quietMs, left), undefined, { ref: false });
      if (this.#provisioning === 0 && this.#started === started) {
        return;
      }
    }
  }

  async #refillPool(cluster: string, pool: { name: string; role: string; rolePassword: Uint8Array }, wanted: number, latest: Map<string, string> | undefined, onlyLow: boolean): Promise<void> {
    const { clusters, locks } = this.#options;
    const lockKey = `pooled-stock:${cluster}:${pool.name}`;
    if (!(await locks.tryLock(lockKey))) {
      // Another Platform instance is refilling it.
      return;
    }
    try {
      const digest = latest === undefined ? undefined : versionsDigest(latest);
      const stock = await clusters.inDatabaseKept(cluster, pool.name, (client) => this.#list(client, pool.name));
      // Under the lock, one not ready was left half-built.
      const current = stock.filter((s) => s.ready && s.digest === digest);
      const surplus = [...stock.filter((s) => !current.includes(s)), ...current.slice(wanted)];
      for (const slot of surplus) {
        await this.#drop(cluster, pool.name, slot);
      }
      const missing = wanted - current.length;
      // After a take, the stock is refilled once it is down to half: one batch of slots rather than one slot per tenant.
      if (missing > 0 && !this.#stopped && (!onlyLow || current.length <= Math.floor(wanted / 2))) {
        await this.#buildBatch(cluster, pool, latest!, digest!, missing);
      }
    } finally {
      await locks.unlock(lockKey).catch(() => undefined);
    }
  }

  /** Drops a slot, its schemas and its role, in one transaction; one being taken meanwhile is waited for, then found gone. */
  async #drop(cluster: string, pool: string, slot: Slot): Promise<void> {
    const { clusters, log } = this.#options;
    await clusters.inDatabase(cluster, pool, async (client) => {
      await client.query("begin");
      try {
        await client.query("select pg_advisory_xact_lock(hashtext($1))", [slotLockKey(slot.role)]);
        if ((await client.query("select 1 from pg_roles where rolname = $1", [slot.role])).rowCount !== 0) {
          const role = pg.escapeIdentifier(slot.role);
          await client.query(`drop owned by ${role} cascade; drop role ${role}`);
        }
        await client.query("commit");
      } catch (error) {
        await client.query("rollback").catch(() => undefined);
        throw error;
      }
    });
    log.info({ cluster, pool, slot: slot.role }, "dropped a slot of the pooled stock");
  }

  /**
   * Builds `count` slots as one batch: their roles (marked as being built)
   * granted to the pool's login and their schemas in one transaction, each
   * migrated by every service through the pool's login as its role (one
   * slot at a time, each after the provisionings under way in this process
   * have ended: the stock gives way to the tenants it serves), then checked
   * to hold `latest` and marked ready by renaming their roles, all in one
   * transaction. A slot that fails is dropped; the others are kept.
   */
  async #buildBatch(cluster: string, pool: { name: string; role: string; rolePassword: Uint8Array }, latest: Map<string, string>, digest: string, count: number): Promise<void> {
    const { clusters, schemas, box, migrateTimeoutMs, log } = this.#options;
    const services = schemas.entries.map((e) => e.name);
    const batch = Array.from({ length: count }, () => {
      const id = randomBytes(idLength / 2).toString("hex");
      const ready = `${this.#prefixOf(pool.name)}${digest}_${id}`;
      return { ready, building: { role: `${ready}${buildingMark}`, digest, id, ready: false } satisfies Slot };
    });
    await clusters.inDatabaseKept(cluster, pool.name, async (client) => {
      const options = await poolGrantOptions(client);
      await client.query(
        // One statement list is one transaction: the batch's slots are made whole from the start, or none is.
        batch
          .flatMap(({ building }) => {
            const role = pg.escapeIdentifier(building.role);
            return [
              `create role ${role} nologin`,
              `grant ${role} to ${pg.escapeIdentifier(pool.role)}${options}`,
              ...services.map((s) => `create schema ${pg.escapeIdentifier(slotSchemaPrefix(building.id) + s)} authorization ${role}`),
            ];
          })
          .join(";\n"),
      );
    });
    const password = box.open(pool.rolePassword, poolPasswordContext(cluster, pool.name));
    const migrated: typeof batch = [];
    let failure: unknown;
    for (const slot of batch) {
      if (this.#stopped || failure !== undefined) {
        await this.#drop(cluster, pool.name, slot.building).catch(() => undefined);
        continue;
      }
      await this.#provisioningsEnded();
      try {
        await migrateDatabase(
          { clusters, schemas, migrateTimeoutMs },
          { cluster, database: pool.name, login: { user: pool.role, password }, sessionRole: slot.building.role, schemaPrefix: slotSchemaPrefix(slot.building.id) },
          undefined,
          "a slot of the pooled stock",
        );
        migrated.push(slot);
      } catch (error) {
        // The services do not answer or refuse: the rest of the batch would fare no better.
        failure = error;
        await this.#drop(cluster, pool.name, slot.building).catch(() => undefined);
      }
    }
    if (migrated.length > 0) {
      const wrong = await clusters.inDatabaseKept(cluster, pool.name, async (client) => {
        const checked = [];
        for (const slot of migrated) {
          checked.push({ slot, current: sameVersions(await readSchemaVersions(client, services, slotSchemaPrefix(slot.building.id)), latest) });
        }
        const renames = checked.filter((c) => c.current).map(({ slot }) => `alter role ${pg.escapeIdentifier(slot.building.role)} rename to ${pg.escapeIdentifier(slot.ready)}`);
        if (renames.length > 0) {
          // One statement list, one transaction (one commit to wait for): the batch's slots become ready together.
          await client.query(renames.join(";\n"));
        }
        return checked.filter((c) => !c.current).map(({ slot }) => slot);
      });
      for (const slot of wrong) {
        await this.#drop(cluster, pool.name, slot.building).catch(() => undefined);
        failure ??= new Error(`a slot of pool database "${pool.name}" was migrated to other versions than the newest the services describe`);
      }
      log.info({ cluster, pool: pool.name, slots: migrated.length - wrong.length }, "stocked ready pooled slots");
    }
    if (failure !== undefined) {
      throw failure;
    }
  }
}

/** The key of a slot's transaction-scoped advisory lock in its pool database. */
function slotLockKey(role: string): string {
  return `tenantry-slot:${role}`;
}

/**
 * How a role is granted to a pool's login: from PostgreSQL 16 a grant
 * says it may be taken on with SET ROLE only; before, the login's
 * NOINHERIT does the same.
 */
export async function poolGrantOptions(client: pg.ClientBase): Promise<string> {
  const { rows } = await client.query<{ version: number }>("select current_setting('server_version_num')::int as version");
  return rows[0]!.version >= 160000 ? " with inherit false, set true" : "";
}

function sameVersions(versions: Map<string, string>, latest: Map<string, string>): boolean {
  return versions.size === latest.size && [...latest].every(([service, version]) => versions.get(service) === version);
}
