import { ConnectError } from "@connectrpc/connect";
import pg from "pg";
import { readAppliedMigrations } from "../mesh/index.ts";
import type { ClusterRegistry } from "./cluster-registry.ts";
import type { SchemaServices } from "./schema-services.ts";

/** A database of a cluster and the role to reach it as (the one that owns it). */
export interface TenantDatabase {
  cluster: string;
  database: string;
  login: { user: string; password: string };
  /** The prefix of the services' schemas there; none when unset (each service's schema is its name). */
  schemaPrefix?: string;
  /** The role to take on with SET ROLE after logging in (a pooled tenant's, through its pool's login); none when unset. */
  sessionRole?: string;
}

/** What the functions below work with. */
export interface TenantDatabaseServices {
  clusters: ClusterRegistry;
  schemas: SchemaServices;
  /** How long one service may take to migrate one database. */
  migrateTimeoutMs: number;
}

/**
 * Has each service migrate its schema in a database that serves no tenant
 * yet (a restore's or a move's target), through its Migrate RPC: up to
 * `versions` (service → migration), leaving out the services not named
 * there, or to its newest when `versions` is undefined (Auth then also
 * merges the permission catalog). `what` names the database in errors.
 */
export async function migrateDatabase(services: TenantDatabaseServices, target: TenantDatabase, versions: Map<string, string> | undefined, what: string): Promise<void> {
  const { clusters, schemas, migrateTimeoutMs } = services;
  const access = await clusters.access(target.cluster);
  const endpoint = { host: access.host, port: access.port, database: target.database, ...target.login, schemaPrefix: target.schemaPrefix ?? "", sessionRole: target.sessionRole ?? "" };
  const permissions = versions === undefined ? (await schemas.permissionCatalog()).permissions : [];
  await eachService(schemas, async ({ name, client }) => {
    const toVersion = versions?.get(name);
    if (versions !== undefined && toVersion === undefined) {
      return;
    }
    try {
      await client.migrate({ target: endpoint, toVersion, permissions }, { timeoutMs: migrateTimeoutMs });
    } catch (error) {
      const cause = ConnectError.from(error);
      throw new ConnectError(`${name} could not migrate ${what}${toVersion === undefined ? "" : ` to ${toVersion}`}: ${cause.rawMessage}`, cause.code);
    }
  });
}

/**
 * Has every service do `work` on a tenant database at once (each on its own
 * schema, as provisioning migrates them); once all have ended, the first
 * failure in the services' order is thrown.
 */
export async function eachService(schemas: TenantDatabaseServices["schemas"], work: (service: TenantDatabaseServices["schemas"]["entries"][number]) => Promise<void>): Promise<void> {
  const outcomes = await Promise.allSettled(schemas.entries.map(work));
  const failed = outcomes.find((outcome) => outcome.status === "rejected");
  if (failed !== undefined) {
    throw failed.reason;
  }
}

/** Each service's schema version (its newest migration applied) in a database, for the services that have a schema there. */
export async function schemaVersionsIn(services: Pick<TenantDatabaseServices, "clusters" | "schemas">, database: TenantDatabase): Promise<Map<string, string>> {
  const client = await services.clusters.connect(database.cluster, database.database, database.login);
  try {
    return await readSchemaVersions(client, services.schemas.entries.map((e) => e.name), database.schemaPrefix);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Each named service's schema version in the database `client` is connected to (its schema named `prefix` + service), for those that have a schema there. */
export async function readSchemaVersions(client: pg.ClientBase, services: string[], prefix = ""): Promise<Map<string, string>> {
  const versions = new Map<string, string>();
  for (const service of services) {
    const applied = await readAppliedMigrations(client, prefix + service);
    if (applied !== undefined) {
      versions.set(service, applied.at(-1) ?? "");
    }
  }
  return versions;
}

/**
 * Makes a database of a cluster refuse (or take again) connections, ending
 * those it has when closed; a database that does not exist is left be.
 */
export async function allowConnections(clusters: ClusterRegistry, cluster: string, database: string, allow: boolean): Promise<void> {
  await clusters.admin(cluster, async (admin) => {
    const exists = await admin.query("select 1 from pg_database where datname = $1", [database]);
    if (exists.rowCount === 0) {
      return;
    }
    await admin.query(`alter database ${pg.escapeIdentifier(database)} with allow_connections ${allow}`);
    if (!allow) {
      await admin.query("select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()", [database]);
    }
  });
}
