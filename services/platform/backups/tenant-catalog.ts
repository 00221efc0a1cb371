import { createHash, type Hash } from "node:crypto";
import { Transform } from "node:stream";
import pg from "pg";
import type { ManifestColumn } from "./backup-manifest.ts";

/** A table of a service schema, as the database describes it. */
export interface CatalogTable {
  schema: string;
  name: string;
  /** Its columns in order, generated ones left out. */
  columns: ManifestColumn[];
  /** Its size on disk, to hand the largest out first. */
  bytes: number;
}

/** The ordinary tables of `schemas` with their columns, by schema and name. */
export async function listTables(client: pg.ClientBase, schemas: string[]): Promise<CatalogTable[]> {
  const { rows } = await client.query<{ schema: string; name: string; columns: ManifestColumn[]; bytes: string }>(
    `select n.nspname as schema, c.relname as name, pg_total_relation_size(c.oid) as bytes,
       coalesce(json_agg(json_build_object('name', a.attname, 'type', format_type(a.atttypid, a.atttypmod)) order by a.attnum)
         filter (where a.attnum is not null), '[]') as columns
     from pg_class c join pg_namespace n on n.oid = c.relnamespace
     left join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped and a.attgenerated = ''
     where c.relkind = 'r' and n.nspname = any($1)
     group by n.nspname, c.relname, c.oid order by 1, 2`,
    [schemas],
  );
  return rows.map((row) => ({ ...row, bytes: Number(row.bytes) }));
}

/** The sequences of `schemas`, by schema and name. */
export async function listSequences(client: pg.ClientBase, schemas: string[]): Promise<{ schema: string; name: string }[]> {
  const { rows } = await client.query<{ schema: string; name: string }>(
    "select n.nspname as schema, c.relname as name from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.relkind = 'S' and n.nspname = any($1) order by 1, 2",
    [schemas],
  );
  return rows;
}

/**
 * How many large objects the database holds (backups do not carry them);
 * with `ownOnly`, only those of the role the session is (a pooled tenant's,
 * not its pool neighbours').
 */
export async function countLargeObjects(client: pg.ClientBase, ownOnly = false): Promise<number> {
  const { rows } = await client.query<{ n: number }>(
    `select count(*)::int as n from pg_catalog.pg_largeobject_metadata${ownOnly ? " where lomowner = current_user::pg_catalog.regrole" : ""}`,
  );
  return rows[0]!.n;
}

/**
 * How a backup's logical schema names (each service's name, as every
 * manifest records them) map to the schemas of one placement: the service's
 * name in a tenant's own database, `prefix` followed by it in a pool
 * database.
 */
export class SchemaNames {
  readonly prefix: string;

  constructor(prefix: string) {
    this.prefix = prefix;
  }

  /** The schema where a service's (logical) schema is. */
  physical(logical: string): string {
    return this.prefix + logical;
  }

  /** The service (logical) schema of a physical one; undefined for a schema not of this prefix. */
  logical(physical: string): string | undefined {
    return physical.startsWith(this.prefix) ? physical.slice(this.prefix.length) : undefined;
  }

  /** A table or sequence named logically, quoted as where it is. */
  quoted(object: { schema: string; name: string }): string {
    return quoted({ schema: this.physical(object.schema), name: object.name });
  }
}

/** Names as they are: a tenant's own database. */
export const sameNames = new SchemaNames("");

/** `schema.name`, each part quoted. */
export function quoted(object: { schema: string; name: string }): string {
  return `${pg.escapeIdentifier(object.schema)}.${pg.escapeIdentifier(object.name)}`;
}

/** The column list of a COPY of `table`, quoted. */
export function columnList(columns: ManifestColumn[]): string {
  return columns.map((c) => pg.escapeIdentifier(c.name)).join(", ");
}

/** Something {@link constraintsToSetAside} sets aside for a load. */
export interface SetAside {
  /** The table it belongs to (a foreign key: the table that refers), `schema.name` quoted. */
  table: string;
  /** A foreign key is rebuilt once every table is loaded; an index or key as soon as its table is. */
  kind: "index" | "key" | "foreign-key";
  /** Drops it; nothing when it is not there. */
  drop: string;
  /** Makes it again, statement by statement (each its own transaction). */
  rebuild: string[];
}

/**
 * What slows a bulk load and is rebuilt faster afterwards: foreign keys,
 * primary keys, unique and exclusion constraints, and indexes that back no
 * constraint, in the tables of `schemas` (every index: a key of random
 * UUIDs loaded row by row costs more than the rows), in the order to drop
 * them (foreign keys first). Each is rebuilt from its definition
 * (`pg_get_indexdef`, `pg_get_constraintdef`): a primary key or unique
 * constraint as its index (built as CREATE INDEX builds, beside the
 * table's other indexes) and then the constraint on that index.
 */
export async function constraintsToSetAside(client: pg.ClientBase, schemas: string[]): Promise<SetAside[]> {
  const { rows: constraints } = await client.query<{ schema: string; table: string; name: string; type: string; definition: string; index: string | null; deferrable: boolean; deferred: boolean }>(
    `select n.nspname as schema, t.relname as table, con.conname as name, con.contype as type, pg_get_constraintdef(con.oid) as definition,
       case when con.contype in ('p', 'u') then pg_get_indexdef(con.conindid) end as index, con.condeferrable as deferrable, con.condeferred as deferred
     from pg_constraint con join pg_class t on t.oid = con.conrelid join pg_namespace n on n.oid = t.relnamespace
     where n.nspname = any($1) and con.contype in ('f', 'p', 'u', 'x') order by con.contype = 'f' desc, 1, 2, 3`,
    [schemas],
  );
  const { rows: indexes } = await client.query<{ schema: string; table: string; name: string; definition: string }>(
    `select n.nspname as schema, t.relname as table, i.relname as name, pg_get_indexdef(i.oid) as definition
     from pg_index x join pg_class i on i.oid = x.indexrelid join pg_class t on t.oid = x.indrelid join pg_namespace n on n.oid = t.relnamespace
     where n.nspname = any($1) and t.relkind = 'r'
       and not exists (select 1 from pg_constraint con where con.conindid = x.indexrelid and con.contype in ('p', 'u', 'x'))
     order by 1, 2, 3`,
    [schemas],
  );
  return [
    ...constraints.map((c): SetAside => {
      const table = quoted({ schema: c.schema, name: c.table });
      const name = pg.escapeIdentifier(c.name);
      const drop = `alter table ${table} drop constraint if exists ${name}`;
      if (c.index !== null) {
        // The index of a key is named as the key; the key takes it over as it is.
        const kind = c.type === "p" ? "primary key" : "unique";
        const timing = `${c.deferrable ? " deferrable" : ""}${c.deferred ? " initially deferred" : ""}`;
        return { table, kind: "key", drop, rebuild: [c.index, `alter table ${table} add constraint ${name} ${kind} using index ${name}${timing}`] };
      }
      return { table, kind: c.type === "f" ? "foreign-key" : "key", drop, rebuild: [`alter table ${table} add constraint ${name} ${c.definition}`] };
    }),
    ...indexes.map((i): SetAside => ({ table: quoted({ schema: i.schema, name: i.table }), kind: "index", drop: `drop index if exists ${quoted(i)}`, rebuild: [i.definition] })),
  ];
}

/** A pass-through stream that hashes (SHA-256) and counts what goes through it. */
export class DigestTap extends Transform {
  readonly #hash: Hash = createHash("sha256");
  bytes = 0;

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: (error?: Error | null, data?: Buffer) => void): void {
    this.#hash.update(chunk);
    this.bytes += chunk.length;
    done(null, chunk);
  }

  /** The digest (hex), once the stream has ended. */
  digest(): string {
    return this.#hash.digest("hex");
  }
}
