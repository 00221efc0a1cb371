import { Code, ConnectError } from "@connectrpc/connect";
import { createHash } from "node:crypto";
import { Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import pg from "pg";
import { to as copyTo } from "pg-copy-streams";
import { quoted } from "../backups/index.ts";

/** A table compared, by schema and name. */
export interface ComparedTable {
  schema: string;
  name: string;
}

/**
 * Compares `tables` on two connections (the source and the target of a
 * move, neither written to meanwhile): the rows of each, and with
 * `digests` the SHA-256 of each one's binary COPY in primary key order.
 * FAILED_PRECONDITION naming the first table that differs. The target's
 * table of a source's is in `targetSchemaOf(schema)` when given. Returns the
 * rows compared.
 */
export async function compareTables(
  source: pg.ClientBase,
  target: pg.ClientBase,
  tables: ComparedTable[],
  options: { digests: boolean; targetSchemaOf?: (schema: string) => string },
): Promise<number> {
  let rows = 0;
  for (const table of tables) {
    const targetTable = { ...table, schema: options.targetSchemaOf?.(table.schema) ?? table.schema };
    const [here, there] = await Promise.all([countRows(source, table), countRows(target, targetTable)]);
    if (here !== there) {
      throw new ConnectError(`table ${table.schema}.${table.name} has ${here} rows on the source and ${there} on the target`, Code.FailedPrecondition);
    }
    rows += here;
    if (options.digests) {
      const order = await orderOf(source, table);
      const [a, b] = await Promise.all([digestOf(source, table, order), digestOf(target, targetTable, order)]);
      if (a !== b) {
        throw new ConnectError(`table ${table.schema}.${table.name} has the same ${here} rows on both sides but not the same content (SHA-256 ${a} on the source, ${b} on the target)`, Code.FailedPrecondition);
      }
    }
  }
  return rows;
}

async function countRows(client: pg.ClientBase, table: ComparedTable): Promise<number> {
  const { rows } = await client.query<{ n: string }>(`select count(*) as n from ${quoted(table)}`);
  return Number(rows[0]!.n);
}

/** The ORDER BY of a table's rows: its primary key, else every column. */
async function orderOf(client: pg.ClientBase, table: ComparedTable): Promise<string> {
  const { rows } = await client.query<{ name: string }>(
    `select a.attname as name from pg_index i
       join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
     where i.indrelid = $1::regclass and i.indisprimary
     order by array_position(i.indkey::int2[], a.attnum)`,
    [quoted(table)],
  );
  if (rows.length > 0) {
    return rows.map((r) => pg.escapeIdentifier(r.name)).join(", ");
  }
  const { rows: columns } = await client.query<{ n: number }>("select count(*)::int as n from pg_attribute where attrelid = $1::regclass and attnum > 0 and not attisdropped", [quoted(table)]);
  return Array.from({ length: columns[0]!.n }, (_, i) => String(i + 1)).join(", ");
}

async function digestOf(client: pg.ClientBase, table: ComparedTable, order: string): Promise<string> {
  const hash = createHash("sha256");
  const source = client.query(copyTo(`copy (select * from ${quoted(table)} order by ${order}) to stdout (format binary)`));
  await pipeline(source, new Writable({ write: (chunk: Buffer, _encoding, done) => (hash.update(chunk), done()) }));
  return hash.digest("hex");
}
