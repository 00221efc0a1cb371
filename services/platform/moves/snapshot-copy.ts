import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import pg from "pg";
import { from as copyFrom, to as copyTo } from "pg-copy-streams";
import { BackupPace, bulkLoad, columnList, quoted, type CatalogTable } from "../backups/index.ts";

/** What {@link copyInSnapshot} copies, from where to where. */
export interface SnapshotCopy {
  /** A connection to the source database, in no transaction. */
  source: pg.Client;
  /** A connection to the target database as the owner of its tables (at the source's schema versions), in no transaction. */
  target: pg.Client;
  /** The snapshot the tables are read in, exported by a connection that stays open until the copy ends; none for a source nobody writes to (frozen). */
  snapshot?: string;
  /** The tables copied, with their columns (generated ones left out), as the source names them. */
  tables: CatalogTable[];
  /** The target's schemas whose keys, foreign keys and indexes are set aside while it is loaded. */
  schemas: string[];
  /** The target's schema of a source's schema (the same when unset): a move into a pool database prefixes the services' schemas. */
  targetSchemaOf?: (schema: string) => string;
  /** Table data copied per second (the binary COPY streams); 0 for no limit. */
  bytesPerSecond: number;
  /** Called once each table is copied, with how many are. */
  copied: (count: number) => Promise<void>;
  /** Stops the copy (Platform stopping): the table under way is cut. */
  signal: AbortSignal;
}

/** What a copy took: the table data's bytes (binary COPY), and its time copying and then rebuilding what was set aside, ms. */
export interface CopyFigures {
  bytes: number;
  copyMs: number;
  rebuildMs: number;
}

/**
 * Copies tables from a snapshot of the source database into the target,
 * at a pace, in one transaction on each side: the source reads in the
 * snapshot, the target empties the tables and loads them with binary COPY
 * (its rows frozen), its keys and indexes set aside and rebuilt at the end
 * (see `bulkLoad`), one core at most for the rebuild. The pace (see
 * `BackupPace`) bounds what the copy takes from the tenants both servers
 * serve meanwhile: mostly the target's, which loads, logs and writes every
 * row. On a failure (or `signal` aborted) both connections are left where
 * they were, in a transaction or a COPY: end them, and the target's tables
 * are as they were before.
 */
export async function copyInSnapshot(copy: SnapshotCopy): Promise<CopyFigures> {
  const { source, target, signal } = copy;
  await source.query("begin isolation level repeatable read read only");
  if (copy.snapshot !== undefined) {
    await source.query(`set transaction snapshot ${pg.escapeLiteral(copy.snapshot)}`);
  }
  const targetSchemaOf = copy.targetSchemaOf ?? ((schema: string) => schema);
  const sourceOf = new Map<CatalogTable, CatalogTable>(copy.tables.map((table) => [{ ...table, schema: targetSchemaOf(table.schema) }, table]));
  await target.query("begin");
  await target.query("set local max_parallel_maintenance_workers = 0");
  const pace = new BackupPace(copy.bytesPerSecond);
  const started = performance.now();
  let count = 0;
  let bytes = 0;
  let copiedAt = started;
  const counter = () =>
    new Transform({
      transform: (chunk: Buffer, _encoding, done) => {
        bytes += chunk.length;
        done(null, chunk);
      },
    });
  await bulkLoad(target, copy.schemas, [...sourceOf.keys()], async (table) => {
    const columns = columnList(table.columns);
    const rows = source.query(copyTo(`copy ${quoted(sourceOf.get(table)!)} (${columns}) to stdout (format binary)`));
    const load = target.query(copyFrom(`copy ${quoted(table)} (${columns}) from stdin (format binary, freeze)`));
    await pipeline(rows, pace.through(), counter(), load, { signal }).catch((error: unknown) => {
      // Cut by the signal: the COPY's own failure (the load was cancelled) follows from it.
      signal.throwIfAborted();
      throw error;
    });
    copiedAt = performance.now();
    await copy.copied(++count);
  });
  await target.query("commit");
  await source.query("commit");
  return { bytes, copyMs: copiedAt - started, rebuildMs: performance.now() - copiedAt };
}
