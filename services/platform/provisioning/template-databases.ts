import { ConnectError } from "@connectrpc/connect";
import type { MikroORM } from "@mikro-orm/postgresql";
import pg from "pg";
import { randomBytes } from "node:crypto";
import type { Logger, SecretBox } from "../../mesh/index.ts";
import type { AdvisoryLocks } from "../advisory-locks.ts";
import type { ClusterRegistry } from "../cluster-registry.ts";
import type { SchemaServices } from "../schema-services.ts";
import { findCluster, recordTemplatePassword, recordTemplateVersions, templatePasswordContext } from "../stores/index.ts";

/** Options of {@link TemplateDatabases}. */
export interface TemplateDatabasesOptions {
  orm: MikroORM;
  clusters: ClusterRegistry;
  schemas: SchemaServices;
  locks: AdvisoryLocks;
  box: SecretBox;
  /** The template database's name on every cluster, also the name of the role its objects are created as. */
  name: string;
  log: Logger;
}

/**
 * One template database per cluster, kept at the newest version of every
 * service's schema through the services' own Migrate RPCs, so that a new
 * tenant's database is a copy (`CREATE DATABASE … TEMPLATE`) rather than a
 * fresh migration. Between refreshes the template takes no connections (a
 * copy needs it untouched). Copies in this process wait for a refresh, and a
 * refresh waits for the copies under way.
 */
export class TemplateDatabases {
  readonly name: string;
  readonly #options: TemplateDatabasesOptions;
  readonly #refreshing = new Map<string, Promise<boolean>>();
  readonly #copies = new Map<string, { count: number; idle: (() => void)[] }>();

  constructor(options: TemplateDatabasesOptions) {
    this.#options = options;
    this.name = options.name;
  }

  /**
   * Runs `copy` with the cluster's template name once the template holds
   * `latest` (refreshing it first if needed), or with undefined when the
   * template cannot be made current; the copy then has to do without.
   */
  async withTemplate<T>(cluster: string, latest: Map<string, string>, copy: (template: string | undefined) => Promise<T>): Promise<T> {
    for (;;) {
      const refreshing = this.#refreshing.get(cluster);
      if (refreshing !== undefined) {
        await refreshing;
        continue;
      }
      const record = await findCluster(this.#options.orm.em.fork(), cluster);
      if (record !== null && !sameVersions(record.templateVersions, latest)) {
        const refresh = this.#refresh(cluster, latest).finally(() => this.#refreshing.delete(cluster));
        this.#refreshing.set(cluster, refresh);
        if (!(await refresh)) {
          return copy(undefined);
        }
        continue;
      }
      const copies = this.#copies.get(cluster) ?? { count: 0, idle: [] };
      this.#copies.set(cluster, copies);
      copies.count++;
      try {
        return await copy(record === null ? undefined : this.name);
      } finally {
        copies.count--;
        if (copies.count === 0) {
          copies.idle.splice(0).forEach((done) => done());
        }
      }
    }
  }

  /** Brings the template to `latest`; false when it could not (provisioning falls back to migrating). */
  async #refresh(cluster: string, latest: Map<string, string>): Promise<boolean> {
    const { orm, clusters, schemas, locks, box, log } = this.#options;
    const lockKey = `template:${cluster}`;
    if (!(await locks.tryLock(lockKey))) {
      // Another Platform instance is refreshing it.
      return false;
    }
    const copies = this.#copies.get(cluster);
    if (copies !== undefined && copies.count > 0) {
      await new Promise<void>((resolve) => copies.idle.push(resolve));
    }
    const template = pg.escapeIdentifier(this.name);
    let opened = false;
    try {
      const em = orm.em.fork();
      const record = (await findCluster(em, cluster))!;
      if (sameVersions(record.templateVersions, latest)) {
        return true;
      }
      const context = templatePasswordContext(cluster);
      let sealed = record.templatePassword;
      if (sealed == null) {
        sealed = box.seal(randomBytes(24).toString("base64url"), context);
        await recordTemplatePassword(em, record, sealed);
      }
      const password = box.open(sealed, context);
      const access = await clusters.access(cluster);
      await clusters.admin(cluster, async (admin) => {
        const role = await admin.query("select 1 from pg_roles where rolname = $1", [this.name]);
        const setPassword = `login password ${pg.escapeLiteral(password)}`;
        await admin.query(role.rowCount === 0 ? `create role ${template} ${setPassword}` : `alter role ${template} ${setPassword}`);
        const database = await admin.query("select 1 from pg_database where datname = $1", [this.name]);
        if (database.rowCount === 0) {
          await admin.query(`create database ${template}`);
        }
        await admin.query(`revoke connect, temporary on database ${template} from public`);
        await admin.query(`grant connect, create on database ${template} to ${template}`);
        await admin.query(`alter database ${template} with is_template false allow_connections true`);
        opened = true;
      });
      const versions: Record<string, string> = {};
      for (const { name, client } of schemas.entries) {
        const outcome = await client.migrate(
          { target: { host: access.host, port: access.port, database: this.name, user: this.name, password } },
          { timeoutMs: 60_000 },
        );
        versions[name] = outcome.version;
      }
      await this.#close(cluster, template);
      opened = false;
      await recordTemplateVersions(em, record, versions);
      log.info({ cluster, versions }, "template database refreshed");
      return sameVersions(versions, latest);
    } catch (error) {
      log.warn({ err: error, cluster, reason: error instanceof ConnectError ? error.rawMessage : undefined }, "template database could not be refreshed; provisioning migrates new databases directly");
      return false;
    } finally {
      if (opened) {
        await this.#close(cluster, template).catch((error: unknown) => log.error({ err: error, cluster }, "could not close the template database to connections"));
      }
      await locks.unlock(lockKey).catch(() => undefined);
    }
  }

  /** Takes the template back out of reach: no connections, marked as a template. */
  async #close(cluster: string, template: string): Promise<void> {
    await this.#options.clusters.admin(cluster, async (admin) => {
      await admin.query(`alter database ${template} with allow_connections false is_template true`);
      await admin.query("select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()", [this.name]);
    });
  }
}

function sameVersions(recorded: Record<string, string> | null | undefined, latest: Map<string, string>): boolean {
  if (recorded == null || Object.keys(recorded).length !== latest.size) {
    return false;
  }
  return [...latest].every(([service, version]) => recorded[service] === version);
}
