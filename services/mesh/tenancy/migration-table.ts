import type { EntityManager } from "@mikro-orm/postgresql";
import pg from "pg";

/**
 * A connection to the database whose migration table is read: a `pg`
 * client (Platform's admin connection to a tenant database) or an
 * EntityManager (a service's connection routed to its tenant).
 */
export type MigrationTableConnection = Pick<pg.ClientBase, "query"> | Pick<EntityManager, "execute">;

/** The table that tracks the migrations of a service's schema, in that schema. */
export const migrationTable = "mikro_orm_migrations";

/** That table in `schema`, qualified: the `tableName` to give a Migrator that always migrates one schema. */
export function migrationTableName(schema: string): string {
  return `${schema}.${migrationTable}`;
}

/**
 * The migrations applied to a service's schema in one database, oldest
 * first, read from the schema's migration table without creating or
 * changing anything; undefined when the schema has no migration table (it
 * was never migrated there). Services use it to report a tenant's schema
 * state, Platform to learn what a copied template database already holds.
 */
export async function readAppliedMigrations(connection: MigrationTableConnection, schema: string): Promise<string[] | undefined> {
  const quoted = `${pg.escapeIdentifier(schema)}.${pg.escapeIdentifier(migrationTable)}`;
  const [found] = await rowsOf<{ present: boolean }>(connection, `select to_regclass(${pg.escapeLiteral(quoted)}) is not null as present`);
  if (!found?.present) {
    return undefined;
  }
  const applied = await rowsOf<{ name: string }>(connection, `select name from ${quoted} order by id`);
  return applied.map((row) => row.name);
}

async function rowsOf<R extends pg.QueryResultRow>(connection: MigrationTableConnection, text: string): Promise<R[]> {
  return "execute" in connection ? connection.execute<R[]>(text) : (await connection.query<R>(text)).rows;
}
