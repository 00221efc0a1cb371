import { Migrator } from "@mikro-orm/migrations";
import { MikroORM } from "@mikro-orm/postgresql";
import pg from "pg";
import { discardLostConnections, migrationTableName, type Logger } from "../../mesh/index.ts";
import { AuditEvent } from "../entities/audit-event.ts";
import { Backup } from "../entities/backup.ts";
import { Cluster } from "../entities/cluster.ts";
import { Move } from "../entities/move.ts";
import { Restore } from "../entities/restore.ts";
import { Tenant } from "../entities/tenant.ts";
import { TenantSchemaVersion } from "../entities/tenant-schema-version.ts";
import { migrations } from "../migrations/index.ts";

/** A PostgreSQL server and the superuser to reach it as. */
export interface ServerAccess {
  host: string;
  port: number;
  user: string;
  password: string;
}

/** The server, credentials and database named by a postgres:// URL. */
export function parseDatabaseUrl(url: string): ServerAccess & { database: string } {
  const parsed = new URL(url);
  return {
    host: decodeURIComponent(parsed.hostname) || "localhost",
    port: parsed.port === "" ? 5432 : Number(parsed.port),
    user: decodeURIComponent(parsed.username),
    password: decodeURIComponent(parsed.password),
    database: decodeURIComponent(parsed.pathname.slice(1)) || "postgres",
  };
}

/** Creates the platform database if the server does not have it yet. */
export async function ensurePlatformDatabase(url: string): Promise<void> {
  const { database, ...cluster } = parseDatabaseUrl(url);
  const client = new pg.Client({ ...cluster, database: "postgres" });
  // Its failure surfaces through the query in flight; unheard, the event would end the process.
  client.on("error", () => {});
  await client.connect();
  try {
    const { rowCount } = await client.query("select 1 from pg_database where datname = $1", [database]);
    if (rowCount === 0) {
      await client.query(`create database ${pg.escapeIdentifier(database)}`).catch((error: { code?: string }) => {
        // Another Platform instance created it first: "already exists", or, when both
        // were creating it at the same moment, a unique violation in the catalog.
        if (error.code !== "42P04" && error.code !== "23505") {
          throw error;
        }
      });
    }
  } finally {
    await client.end();
  }
}

/**
 * Platform's ORM over its own database, with its entities and migrations.
 * Connections its pool loses (a database restart) are discarded, not lent
 * again, and reported to `log`.
 */
export async function createPlatformOrm(url: string, log: Logger): Promise<MikroORM> {
  const orm = new MikroORM({
    clientUrl: url,
    entities: [AuditEvent, Backup, Cluster, Move, Restore, Tenant, TenantSchemaVersion],
    schema: "platform",
    ensureDatabase: false,
    allowGlobalContext: false,
    pool: { min: 0, max: 10 },
    extensions: [Migrator],
    migrations: {
      migrationsList: migrations,
      tableName: migrationTableName("platform"),
      snapshot: false,
      silent: true,
    },
  });
  const pool = await orm.em.getConnection().getNativeClient();
  discardLostConnections(pool, (error) => log.warn({ err: error }, "platform database connection lost"));
  return orm;
}

/** The advisory lock (class, key) that Platform instances take while migrating their own database. */
const migrationLock = [7352, 1] as const;

/**
 * Brings the platform database to the newest schema; returns the migrations
 * applied. Platforms starting at once take turns, under an advisory lock held
 * on a connection of its own: the second finds nothing left to do.
 */
export async function migratePlatformDatabase(orm: MikroORM, url: string): Promise<string[]> {
  const lock = new pg.Client({ connectionString: url, application_name: "tenantry-platform-migrations" });
  // A lost connection fails the queries below; the event itself must not end the process.
  lock.on("error", () => undefined);
  await lock.connect();
  try {
    await lock.query("select pg_advisory_lock($1, $2)", [...migrationLock]);
    const applied = await new Migrator(orm.em.fork()).up();
    return applied.map((m) => m.name);
  } finally {
    // Ending the session releases the lock, even if unlocking is never reached.
    await lock.end();
  }
}
