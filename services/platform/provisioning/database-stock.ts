import type { MikroORM } from "@mikro-orm/postgresql";
import pg from "pg";
import { createHash, randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "../../mesh/index.ts";
import type { AdvisoryLocks } from "../advisory-locks.ts";
import type { ClusterRegistry } from "../cluster-registry.ts";
import type { SchemaServices } from "../schema-services.ts";
import { clusterStates, listClusters } from "../stores/index.ts";
import { readSchemaVersions } from "../tenant-databases.ts";
import { namePrefixBounds } from "./name-prefix.ts";
import type { TemplateDatabases } from "./template-databases.ts";

/** Options of {@link DatabaseStock}. */
export interface DatabaseStockOptions {
  orm: MikroORM;
  clusters: ClusterRegistry;
  schemas: SchemaServices;
  /** Where stock databases are copied from; without templates no stock is kept (and any left is dropped). */
  templates: TemplateDatabases | undefined;
  locks: AdvisoryLocks;
  /** Ready databases kept on each cluster that accepts tenants; 0 keeps none and drops those left. */
  size: number;
  /**
   * What every stock database's name starts with (the platform database's
   * name), so that two deployments sharing a server never take each other's.
   */
  owner: string;
  log: Logger;
}

/** The hex digits of a stock database's name that say which cluster keeps it (two may be one server). */
const clusterTagLength = 6;
/** The hex digits of a stock database's name that say which schema versions it holds. */
const digestLength = 10;
/** The hex digits that tell stock databases of the same versions apart. */
const idLength = 8;
/** What a stock database's name ends with while it is being built. */
const buildingMark = "_b";
const suffixLength = "_stock_".length + clusterTagLength + 1 + digestLength + 1 + idLength + buildingMark.length;
/** The longest wait before asking services that did not answer for their versions again. */
const maxRetryMs = 30_000;
/** The longest a refill waits for provisionings under way before it builds a database anyway. */
const maxQuietWaitMs = 1000;

/** How a stock database's name spells the schema versions it holds: a digest of every service's newest migration. */
function versionsDigest(versions: Map<string, string>): string {
  const sorted = [...versions].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return createHash("sha256").update(JSON.stringify(sorted)).digest("hex").slice(0, digestLength);
}

/**
 * A few ready databases on every cluster, copies of its template at the
 * newest schema versions, so that provisioning a tenant takes one by
 * renaming it and handing it to the tenant's role instead of copying the
 * template (`CREATE DATABASE … TEMPLATE` writes the whole database, the
 * slowest part of provisioning on durable storage).
 *
 * The stock lives on the clusters alone: a stock database is named
 * `<owner>_stock_<cluster tag>_<versions digest>_<id>` (with `_b` at the
 * end while it is being built, and so never taken), belongs to the
 * cluster's admin, refuses every connection and grants nothing to PUBLIC.
 * Taking one is a single transaction on the cluster (rename, owner,
 * connections), so it is whole or not at all, and two takers, in one
 * Platform or two, can never both have the same one: the second finds the
 * name gone. A take never waits for the stock: with none at the newest
 * versions, the caller copies the template as before. Refills run in the
 * background, one cluster at a time under an advisory lock, one database
 * at a time once the provisionings under way have ended: after each
 * provisioning, at start and every sweep, building what is missing and
 * dropping stock at other versions (a service deployed with new
 * migrations), half-built or on a cluster that no longer accepts tenants.
 */
export class DatabaseStock {
  readonly #options: DatabaseStockOptions;
  readonly #owner: string;
  #refilling: Promise<void> | undefined;
  #again = false;
  #stopped = false;
  #retry: NodeJS.Timeout | undefined;
  #retryMs = 0;
  /** Provisionings under way in this process, and refills waiting for them to end. */
  #provisioning = 0;
  #quiet: (() => void)[] = [];

  constructor(options: DatabaseStockOptions) {
    this.#options = options;
    this.#owner = options.owner.slice(0, 63 - suffixLength);
  }

  /** What the names of a cluster's stock databases start with. */
  #prefixOf(cluster: string): string {
    return `${this.#owner}_stock_${createHash("sha256").update(cluster).digest("hex").slice(0, clusterTagLength)}_`;
  }

  /** How many ready databases each accepting cluster keeps. */
  get size(): number {
    return this.#options.templates === undefined ? 0 : this.#options.size;
  }

  /**
   * Makes a stock database of `cluster` holding `latest` the database
   * `target.database`, owned by `target.role` and open to connections;
   * false, changing nothing, when the stock has none (or the target's name
   * is taken).
   */
  async take(cluster: string, latest: Map<string, string>, target: { database: string; role: string }): Promise<boolean> {
    if (this.size === 0) {
      return false;
    }
    const { clusters, log } = this.#options;
    try {
      const digest = versionsDigest(latest);
      const ready = (await this.#list(cluster)).filter((stock) => stock.ready && stock.digest === digest);
      const database = pg.escapeIdentifier(target.database);
      for (const { name } of ready) {
        try {
          // One statement list is one transaction: the database is the tenant's whole, or still in the stock.
          await clusters.admin(cluster, (admin) =>
            admin.query(
              `alter database ${pg.escapeIdentifier(name)} rename to ${database};
               alter database ${database} owner to ${pg.escapeIdentifier(target.role)};
               revoke connect, temporary on database ${database} from public;
               alter database ${database} with allow_connections true`,
            ),
          );
          log.info({ cluster, stock: name, database: target.database }, "took a database of the stock");
          return true;
        } catch (error) {
          const code = (error as { code?: unknown }).code;
          if (code === "42P04") {
            // The target exists already: not the stock's to decide.
            return false;
          }
          if (code !== "3D000") {
            log.warn({ err: error, cluster, stock: name }, "could not take a database of the stock; trying another");
          }
          // 3D000: another taker had it first, or a refill dropped it.
        }
      }
      return false;
    } catch (error) {
      log.warn({ err: error, cluster }, "could not look into the database stock; copying the template instead");
      return false;
    }
  }

  /**
   * Runs a provisioning. Refills wait for the provisionings under way in
   * this process to end before they build another database (at most
   * {@link maxQuietWaitMs}), so as not to take the disk from them, and
   * one starts when it ends (it may have taken a database, or found none).
   */
  async whileProvisioning<T>(work: () => Promise<T>): Promise<T> {
    this.#provisioning++;
    try {
      return await work();
    } finally {
      if (--this.#provisioning === 0) {
        this.#quiet.splice(0).forEach((resume) => resume());
      }
      if (this.size > 0) {
        this.refillInBackground();
      }
    }
  }

  /**
   * The stock databases of a cluster, by name order, with the digest of the
   * versions each holds, and whether it is ready: not being built (or left
   * half-built by a Platform that stopped), closed to connections.
   */
  async #list(cluster: string): Promise<{ name: string; digest: string; ready: boolean }[]> {
    const prefix = this.#prefixOf(cluster);
    const { rows } = await this.#options.clusters.admin(cluster, (admin) =>
      admin.query<{ name: string; open: boolean }>("select datname as name, datallowconn as open from pg_database where datname >= $1::name and datname < $2::name order by datname", namePrefixBounds(prefix)),
    );
    const pattern = new RegExp(`^${escapeRegExp(prefix)}([0-9a-f]{${digestLength}})_[0-9a-f]{${idLength}}$`);
    return rows.map(({ name, open }) => {
      const match = pattern.exec(name);
      return { name, digest: match?.[1] ?? "", ready: match !== null && !open };
    });
  }

  /**
   * Brings every cluster's stock to its size at the newest versions, one
   * database at a time. A refill asked for while one runs makes it go round
   * once more; the promise settles once no more is asked.
   */
  refill(): Promise<void> {
    if (this.#refilling !== undefined) {
      this.#again = true;
      return this.#refilling;
    }
    this.#refilling = (async () => {
      do {
        this.#again = false;
        await this.#refillAll();
      } while (this.#again && !this.#stopped);
    })().finally(() => (this.#refilling = undefined));
    return this.#refilling;
  }

  /** Refills in the background (see {@link refill}); a failure is logged, and the next sweep tries again. */
  refillInBackground(): void {
    if (!this.#stopped) {
      this.refill().catch((error: unknown) => this.#options.log.warn({ err: error }, "refilling the database stock failed; the next sweep tries again"));
    }
  }

  /** Stops refilling: the database being built is finished, no other is started. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#retry);
    await this.#refilling?.catch(() => undefined);
  }

  async #refillAll(): Promise<void> {
    const { orm, log } = this.#options;
    const clusters = await listClusters(orm.em.fork());
    let latest: Map<string, string> | undefined;
    // Asked only when some stock is wanted: with none, a sweep needs no service to drop what is left.
    if (this.size > 0 && clusters.some(({ cluster }) => cluster.state === clusterStates.accepting)) {
      latest = await this.#latestVersions();
      if (latest === undefined) {
        return;
      }
    }
    for (const { cluster } of clusters) {
      if (this.#stopped) {
        return;
      }
      const wanted = latest !== undefined && cluster.state === clusterStates.accepting ? this.size : 0;
      try {
        await this.#refillCluster(cluster.name, wanted, latest);
      } catch (error) {
        log.warn({ err: error, cluster: cluster.name }, "could not refill the cluster's database stock; the next sweep tries again");
      }
    }
  }

  /**
   * The services' newest versions; undefined while they do not answer (at
   * start, Platform may be up before them), with a refill tried again soon.
   */
  async #latestVersions(): Promise<Map<string, string> | undefined> {
    try {
      const latest = await this.#options.schemas.latestVersions();
      this.#retryMs = 0;
      return latest;
    } catch (error) {
      this.#retryMs = Math.min(Math.max(2 * this.#retryMs, 1000), maxRetryMs);
      const level = this.#retryMs < maxRetryMs ? "debug" : "warn";
      this.#options.log[level]({ err: error, retryInMs: this.#retryMs }, "the schema services do not answer; the database stock is refilled once they do");
      clearTimeout(this.#retry);
      this.#retry = setTimeout(() => this.refillInBackground(), this.#retryMs).unref();
      return undefined;
    }
  }

  /**
   * Readies a copy of the template for the stock: closed to PUBLIC, checked
   * to hold `latest` (else dropped), connected to once so that a tenant's
   * first connections find its caches built, then closed to connections
   * and given its name in the stock.
   */
  async #ready(cluster: string, building: string, name: string, latest: Map<string, string>): Promise<void> {
    const { clusters, schemas, log } = this.#options;
    const database = pg.escapeIdentifier(building);
    await clusters.admin(cluster, (admin) => admin.query(`revoke connect, temporary on database ${database} from public; alter database ${database} with allow_connections true`));
    const versions = await clusters.inDatabase(cluster, building, (client) => readSchemaVersions(client, schemas.entries.map((e) => e.name)));
    if (versions.size !== latest.size || [...latest].some(([service, version]) => versions.get(service) !== version)) {
      await clusters.dropDatabase(cluster, building);
      log.warn({ cluster, versions: Object.fromEntries(versions), latest: Object.fromEntries(latest) }, "a copy of the template does not hold the newest versions; dropped, not stocked");
      throw new Error(`the template of cluster "${cluster}" does not hold the newest schema versions its record says it does`);
    }
    await clusters.admin(cluster, (admin) =>
      admin.query(`alter database ${database} with allow_connections false; alter database ${database} rename to ${pg.escapeIdentifier(name)}`),
    );
    log.info({ cluster, stock: name }, "stocked a ready database");
  }

  /** Resolves once no provisioning runs in this process, or after {@link maxQuietWaitMs}. */
  async #provisioningsEnded(): Promise<void> {
    if (this.#provisioning > 0) {
      await Promise.race([new Promise<void>((resume) => this.#quiet.push(resume)), sleep(maxQuietWaitMs, undefined, { ref: false })]);
    }
  }

  async #refillCluster(cluster: string, wanted: number, latest: Map<string, string> | undefined): Promise<void> {
    const { clusters, templates, locks, log } = this.#options;
    const lockKey = `stock:${this.#owner}:${cluster}`;
    if (!(await locks.tryLock(lockKey))) {
      // Another Platform instance is refilling it.
      return;
    }
    try {
      const digest = latest === undefined ? undefined : versionsDigest(latest);
      const stock = await this.#list(cluster);
      // Under the lock, one not ready was left half-built.
      const current = stock.filter((s) => s.ready && s.digest === digest);
      const surplus = [...stock.filter((s) => !current.includes(s)), ...current.slice(wanted)];
      for (const { name } of surplus) {
        await clusters.dropDatabase(cluster, name);
        log.info({ cluster, stock: name }, "dropped a database of the stock");
      }
      for (let count = current.length; count < wanted && !this.#stopped; count++) {
        await this.#provisioningsEnded();
        const name = `${this.#prefixOf(cluster)}${digest}_${randomBytes(idLength / 2).toString("hex")}`;
        const building = `${name}${buildingMark}`;
        const copied = await templates!.withTemplate(cluster, latest!, async (template) => {
          if (template === undefined) {
            return false;
          }
          await clusters.admin(cluster, (admin) =>
            admin.query(`create database ${pg.escapeIdentifier(building)} template ${pg.escapeIdentifier(template)} allow_connections false`),
          );
          return true;
        });
        if (!copied) {
          log.warn({ cluster }, "the cluster's template cannot be made current; its database stock is not refilled");
          return;
        }
        await this.#ready(cluster, building, name, latest!);
      }
    } finally {
      await locks.unlock(lockKey).catch(() => undefined);
    }
  }
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
