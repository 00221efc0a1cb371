import { createHash } from "node:crypto";
import { pipeline } from "node:stream/promises";
import { Writable } from "node:stream";
import pg from "pg";
import { to as copyTo } from "pg-copy-streams";

/**
 * SHA-256 of every table of `schemas` in a database, by `schema.table`:
 * its rows as binary COPY, ordered by every column, so that two databases
 * holding the same rows give the same digests whatever their physical order.
 */
export async function tableDigests(url: string, schemas: string[]): Promise<Record<string, string>> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows: tables } = await client.query<{ schema: string; name: string; columns: string[] }>(
      `select n.nspname as schema, c.relname as name, array_agg(quote_ident(a.attname) order by a.attnum)::text[] as columns
       from pg_class c join pg_namespace n on n.oid = c.relnamespace
       join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
       where c.relkind = 'r' and n.nspname = any($1) group by 1, 2 order by 1, 2`,
      [schemas],
    );
    const digests: Record<string, string> = {};
    for (const { schema, name, columns } of tables) {
      const hash = createHash("sha256");
      const table = `${pg.escapeIdentifier(schema)}.${pg.escapeIdentifier(name)}`;
      const order = columns.map((_, i) => i + 1).join(", ");
      await pipeline(
        client.query(copyTo(`copy (select ${columns.join(", ")} from ${table} order by ${order}) to stdout (format binary)`)),
        new Writable({
          write(chunk: Buffer, _encoding, done) {
            hash.update(chunk);
            done();
          },
        }),
      );
      digests[`${schema}.${name}`] = hash.digest("hex");
    }
    return digests;
  } finally {
    await client.end();
  }
}
