import { Code, ConnectError } from "@connectrpc/connect";
import { pipeline } from "node:stream/promises";
import { Writable } from "node:stream";
import { createGunzip } from "node:zlib";
import pg from "pg";
import { from as copyFrom, to as copyTo } from "pg-copy-streams";
import { qualifiedName, type BackupManifest, type ManifestTable } from "./backup-manifest.ts";
import { fileContext, type DataKey } from "./backup-envelope.ts";
import type { BackupKey, BackupStorage } from "./backup-storage.ts";
import { openStream } from "./sealed-stream.ts";
import { bulkLoad } from "./bulk-load.ts";
import { columnList, DigestTap, listTables, quoted } from "./tenant-catalog.ts";

/** The size of the chunks gunzip makes: four times zlib's default, a quarter of the hand-offs to its thread and of the buffers. */
const zlibChunkBytes = 64 * 1024;

/** What {@link loadBackup} loads, and where. */
export interface BackupLoad {
  /** A connection to the database loaded, as the owner of its schemas, at the backup's schema versions. */
  client: pg.Client;
  key: BackupKey;
  manifest: BackupManifest;
  dataKey: DataKey;
  storage: BackupStorage;
  /** Also read every table back once loaded and compare it with the manifest (a verification drill). */
  readBack: boolean;
}

/**
 * Loads a backup into a database migrated to the backup's versions, in
 * one transaction (a failure, or a crash, leaves the database as it was):
 * the tables' columns checked against the manifest, foreign keys, primary
 * keys, unique constraints and indexes set aside, every table emptied and
 * loaded with binary COPY from its file (its rows frozen), rows and SHA-256
 * compared with the manifest, what was set aside rebuilt, sequences set;
 * then ANALYZE of the tables loaded.
 * FAILED_PRECONDITION naming the table whose columns, rows or digest differ,
 * or the file that fails its integrity check.
 */
export async function loadBackup(load: BackupLoad): Promise<void> {
  const { client, manifest } = load;
  const schemas = Object.keys(manifest.services);
  await client.query("begin");
  try {
    await checkTables(client, manifest, schemas);
    await bulkLoad(client, schemas, manifest.tables, (table) => copyIn(load, table));
    for (const sequence of manifest.sequences) {
      await client.query("select setval($1::regclass, $2::bigint, $3)", [quoted(sequence), sequence.lastValue, sequence.isCalled]);
    }
    if (load.readBack) {
      // Freshly loaded tables hold their rows in the order loaded: a plain scan from the start reads them back in it.
      await client.query("set local synchronize_seqscans = off");
      for (const table of manifest.tables) {
        const tap = new DigestTap();
        const source = client.query(copyTo(`copy ${quoted(table)} (${columnList(table.columns)}) to stdout (format binary)`));
        await pipeline(source, tap, discard());
        compare(load.key, table, { rows: source.rowCount, sha256: tap.digest() }, "reads back");
      }
    }
    await client.query("commit");
  } catch (error) {
    await client.query("rollback").catch(() => undefined);
    throw error;
  }
  if (manifest.tables.length > 0) {
    await client.query(`analyze ${manifest.tables.map(quoted).join(", ")}`);
  }
}

/** Refuses a database whose tables are not the manifest's, with the same columns. */
async function checkTables(client: pg.Client, manifest: BackupManifest, schemas: string[]): Promise<void> {
  const present = new Map((await listTables(client, schemas)).map((t) => [qualifiedName(t), t]));
  for (const table of manifest.tables) {
    const name = qualifiedName(table);
    const found = present.get(name);
    present.delete(name);
    const signature = (columns: ManifestTable["columns"]) => columns.map((c) => `${c.name} ${c.type}`).join(", ");
    if (found === undefined) {
      throw new ConnectError(`table ${name} of backup "${manifest.backupId}" is missing at the backup's schema versions: the services' migrations no longer make it`, Code.FailedPrecondition);
    }
    if (signature(found.columns) !== signature(table.columns)) {
      throw new ConnectError(
        `table ${name} has columns (${signature(found.columns)}) at the backup's schema versions, but backup "${manifest.backupId}" holds (${signature(table.columns)}): the services' migrations changed since it was taken`,
        Code.FailedPrecondition,
      );
    }
  }
  const extra = [...present.keys()];
  if (extra.length > 0) {
    throw new ConnectError(`backup "${manifest.backupId}" has no table ${extra.join(", ")}, which the backup's schema versions make: the services' migrations changed since it was taken`, Code.FailedPrecondition);
  }
}

/** Loads one table from its file, checking rows and digest against the manifest. */
async function copyIn(load: BackupLoad, table: ManifestTable): Promise<void> {
  const what = `file ${table.file} (${qualifiedName(table)}) of backup "${load.key.backupId}"`;
  const file = await load.storage.get(load.key, table.file).catch((error: NodeJS.ErrnoException) => {
    throw error.code === "ENOENT" ? new ConnectError(`${what} is missing from storage`, Code.FailedPrecondition) : error;
  });
  const tap = new DigestTap();
  // Frozen as loaded (the table was emptied in this transaction): no reader after it has hint bits to write, ANALYZE first.
  const sink = load.client.query(copyFrom(`copy ${quoted(table)} (${columnList(table.columns)}) from stdin (format binary, freeze)`));
  try {
    await pipeline(file, openStream(load.dataKey.key, fileContext(load.key, table.file), what), createGunzip({ chunkSize: zlibChunkBytes }), tap, sink);
  } catch (error) {
    const message = (error as Error).message;
    if (message.includes(what)) {
      // The auth tag, checked at the end, did not match.
      throw new ConnectError(message, Code.FailedPrecondition);
    }
    // Bytes decrypted from a changed file, or with another backup's key, are not gzip (or not COPY's
    // binary format) and fail before the tag is reached: the same fault, said the same way.
    const code = (error as { code?: string }).code;
    if (code?.startsWith("Z_") || code === "22P04") {
      throw new ConnectError(`${what} failed its integrity check: it was changed, cut short, or belongs to another backup (${message})`, Code.FailedPrecondition);
    }
    throw error;
  }
  compare(load.key, table, { rows: sink.rowCount, sha256: tap.digest() }, "loads");
}

function compare(key: BackupKey, table: ManifestTable, found: { rows: number; sha256: string }, doing: string): void {
  if (found.rows !== table.rows || found.sha256 !== table.sha256) {
    throw new ConnectError(
      `table ${qualifiedName(table)} ${doing} as ${found.rows} rows with SHA-256 ${found.sha256}, but backup "${key.backupId}" recorded ${table.rows} rows with SHA-256 ${table.sha256}`,
      Code.FailedPrecondition,
    );
  }
}

function discard(): Writable {
  return new Writable({ write: (_chunk, _encoding, done) => done() });
}
