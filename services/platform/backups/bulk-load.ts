import type pg from "pg";
import { constraintsToSetAside, quoted } from "./tenant-catalog.ts";

/**
 * Empties `tables` and has `copyIn` load each, in the transaction open on
 * `client`, with the keys, foreign keys and indexes of `schemas` set aside
 * meanwhile and rebuilt at the end (see {@link constraintsToSetAside}):
 * what a restore and a move's initial copy load through. Emptied in the
 * transaction, the tables can be loaded with `COPY … (freeze)`; a failure
 * or a crash before the commit leaves them as they were.
 */
export async function bulkLoad<T extends { schema: string; name: string }>(client: pg.ClientBase, schemas: string[], tables: T[], copyIn: (table: T) => Promise<void>): Promise<void> {
  const setAside = await constraintsToSetAside(client, schemas);
  for (const item of setAside) {
    await client.query(item.drop);
  }
  if (tables.length > 0) {
    await client.query(`truncate ${tables.map(quoted).join(", ")}`);
  }
  for (const table of tables) {
    await copyIn(table);
  }
  // Keys and indexes first: a foreign key needs the key it refers to.
  const foreignKeysLast = [...setAside.filter((item) => item.kind !== "foreign-key"), ...setAside.filter((item) => item.kind === "foreign-key")];
  for (const statement of foreignKeysLast.flatMap((item) => item.rebuild)) {
    await client.query(statement);
  }
}
