import { Migrator } from "@mikro-orm/migrations";
import { MikroORM } from "@mikro-orm/postgresql";
import pg from "pg";
import { discardLostConnections, type Logger } from "../mesh/index.ts";
import { AuditEvent } from "./entities/audit-event.ts";
import { Cluster } from "./entities/cluster.ts";
import { Tenant } from "./entities/tenant.ts";
import { TenantSchemaVersion } from "./entities/tenant-schema-version.ts";
import { migrations } from "./migrations/index.ts";

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
        // Another Platform instance created it first.
        if (error.code !== "42P04") {
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
    entities: [AuditEvent, Cluster, Tenant, TenantSchemaVersion],
    schema: "platform",
    ensureDatabase: false,
    allowGlobalContext: false,
    pool: { min: 0, max: 10 },
    extensions: [Migrator],
    migrations: {
      migrationsList: migrations,
      tableName: "platform.mikro_orm_migrations",
      snapshot: false,
      silent: true,
    },
  });
  const pool = await orm.em.getConnection().getNativeClient();
  discardLostConnections(pool, (error) => log.warn({ err: error }, "platform database connection lost"));
  return orm;
}

/** Brings the platform database to the newest schema; returns the migrations applied. */
export async function migratePlatformDatabase(orm: MikroORM): Promise<string[]> {
  const applied = await new Migrator(orm.em.fork()).up();
  return applied.map((m) => m.name);
}
