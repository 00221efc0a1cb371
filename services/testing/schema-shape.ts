import pg from "pg";

/**
 * The constraints and indexes of the tables of `schemas` in a database, as
 * lines that name each and give its definition (`pg_get_constraintdef`,
 * `pg_get_indexdef`), whether it is deferrable and validated, and what
 * index backs it: two databases with the same lines have the same keys,
 * foreign keys and indexes.
 */
export async function schemaShape(url: string, schemas: string[]): Promise<string[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<{ line: string }>(
      `select format('constraint %s.%s %s %s deferrable=%s deferred=%s valid=%s index=%s', n.nspname, t.relname, con.conname, pg_get_constraintdef(con.oid),
           con.condeferrable, con.condeferred, con.convalidated, coalesce(con.conindid::regclass::text, '-')) as line
         from pg_constraint con join pg_class t on t.oid = con.conrelid join pg_namespace n on n.oid = t.relnamespace where n.nspname = any($1)
       union all
       select format('index %s valid=%s primary=%s unique=%s', pg_get_indexdef(x.indexrelid), x.indisvalid, x.indisprimary, x.indisunique)
         from pg_index x join pg_class t on t.oid = x.indrelid join pg_namespace n on n.oid = t.relnamespace where n.nspname = any($1)
       union all
       select format('not null %s.%s.%s', n.nspname, t.relname, a.attname)
         from pg_attribute a join pg_class t on t.oid = a.attrelid join pg_namespace n on n.oid = t.relnamespace
         where n.nspname = any($1) and t.relkind = 'r' and a.attnum > 0 and a.attnotnull and not a.attisdropped
       order by 1`,
      [schemas],
    );
    return rows.map((row) => row.line);
  } finally {
    await client.end();
  }
}
