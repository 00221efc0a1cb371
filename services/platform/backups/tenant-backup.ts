import { Code, ConnectError } from "@connectrpc/connect";
import { Readable } from "node:stream";
import pg from "pg";
import { readAppliedMigrations } from "../../mesh/index.ts";
import type { BackupTableRecord } from "../stores/index.ts";
import { backupFormat, gzipBackupFormat, qualifiedName, tableFileName, type BackupManifest, type ManifestTable } from "./backup-manifest.ts";
import { fileContext, manifestFile, sealManifest, type DataKey } from "./backup-envelope.ts";
import type { BackupKey, BackupStorage } from "./backup-storage.ts";
import { BackupPace } from "./backup-pace.ts";
import type { BackupCompression } from "./compressed-blocks.ts";
import { connectTo, TableReader, type TableRead, type TenantConnection } from "./table-reader.ts";
import { columnList, countLargeObjects, listSequences, listTables, type SchemaNames } from "./tenant-catalog.ts";

/** The steps of taking a backup, each reported once done (crash tests stop Platform after one). */
export const backupSteps = ["snapshot", "copy-tables", "write-manifest", "publish"] as const;

export type BackupStep = (typeof backupSteps)[number];

/** Why a backup failed whose workers could not take up its snapshot. */
const snapshotLost = "the backup's snapshot was lost with its connection (the tenant's database restarted, or its connections were ended); take it again";

/** What {@link takeBackup} needs. */
export interface TenantBackupRequest {
  key: BackupKey;
  /** Where the data is read from, recorded in the manifest. */
  placement: BackupManifest["placement"];
  /** How to connect to the tenant's database (as its role, its search_path leaving nothing unqualified to chance). */
  connection: TenantConnection;
  /** The service schemas backed up (those of the data-owning services), by service name. */
  schemas: string[];
  /**
   * Where those schemas are: `prefix + service` (a pooled tenant's, read as
   * its role, which owns them); the manifest names them by service either
   * way, so that a backup restores into either placement.
   */
  names: SchemaNames;
  storage: BackupStorage;
  dataKey: DataKey;
  /** Connections reading tables at once (each on a thread of its own: see {@link TableReader}), the snapshot's own besides. */
  workers: number;
  /** Table data read per second, all workers together (the raw COPY streams); 0 for no limit. */
  maxBytesPerSecond: number;
  /**
   * How the tables' files are compressed: by default zstd (format 1.1);
   * gzip writes a backup of format 1.0, as Platforms before 1.1 did.
   */
  compression?: BackupCompression;
  /** Called as the backup goes: the versions and the number of tables once the snapshot is taken, then after each table. */
  progress: (progress: { schemaVersions: Record<string, string>; tableCount: number; tables: BackupTableRecord[]; sizeBytes: number }) => Promise<void>;
  afterStep?: (step: BackupStep) => void | Promise<void>;
}

/**
 * Takes a backup of a tenant's database: every table of the service
 * schemas as its binary COPY stream, compressed (zstd level 1) and
 * encrypted with the backup's data key, one file each, then the manifest, then publishes
 * it. All tables are read in one snapshot: a read-only repeatable-read
 * transaction exports it and the workers import it, so writes go on
 * meanwhile and none is half in the backup. The workers read, compress and
 * seal on threads of a low priority (see {@link TableReader}); this
 * thread only stores what they sealed. The tables are read at the
 * request's pace (see {@link BackupPace}). Sequences are read after the
 * tables (they are not transactional; later values are the safe side).
 * FAILED_PRECONDITION when the database holds large objects. Returns the
 * manifest; the backup is published when it resolves.
 */
export async function takeBackup(request: TenantBackupRequest): Promise<BackupManifest> {
  const { key, storage, schemas, names } = request;
  const compression = request.compression ?? "zstd";
  const clients: pg.Client[] = [];
  const readers: TableReader[] = [];
  try {
    const coordinator = await connectTo(request.connection);
    clients.push(coordinator);
    await coordinator.query("begin isolation level repeatable read read only");
    const { rows } = await coordinator.query<{ snapshot: string; version: string; at: Date }>(
      "select pg_export_snapshot() as snapshot, current_setting('server_version') as version, now() as at",
    );
    const { snapshot, version, at } = rows[0]!;
    // A pooled tenant's own only: its neighbours' are none of its backup's business.
    const largeObjects = await countLargeObjects(coordinator, names.prefix !== "");
    if (largeObjects > 0) {
      throw new ConnectError(
        `tenant "${key.tenantId}" has ${largeObjects} large object(s) in its ${names.prefix === "" ? "database" : "pool database"}, which backups do not carry; store them in tables (bytea) and back up again`,
        Code.FailedPrecondition,
      );
    }
    const services: BackupManifest["services"] = {};
    for (const schema of schemas) {
      const migrations = await readAppliedMigrations(coordinator, names.physical(schema));
      if (migrations !== undefined) {
        services[schema] = { migrations };
      }
    }
    const schemaVersions = Object.fromEntries(Object.entries(services).map(([service, { migrations }]) => [service, migrations.at(-1) ?? ""]));
    // Named by service in the manifest, whatever the placement.
    const catalog = (await listTables(coordinator, Object.keys(services).map((s) => names.physical(s)))).map((table) => ({ ...table, schema: names.logical(table.schema)! }));
    await request.progress({ schemaVersions, tableCount: catalog.length, tables: [], sizeBytes: 0 });
    await request.afterStep?.("snapshot");

    const tables: ManifestTable[] = catalog.map((table, index) => ({ schema: table.schema, name: table.name, file: tableFileName(index, compression), columns: table.columns, rows: 0, sha256: "", storedBytes: 0 }));
    // The largest first, so that the workers end together.
    const queue = tables.map((table, index) => ({ table, bytes: catalog[index]!.bytes })).sort((a, b) => b.bytes - a.bytes);
    const done: ManifestTable[] = [];
    let sizeBytes = 0;
    const pace = new BackupPace(request.maxBytesPerSecond);
    const work = async () => {
      const reader = new TableReader();
      readers.push(reader);
      await reader.open(request.connection, snapshot).catch((error: { code?: string }) => {
        // The snapshot is gone with the session that exported it (42704: no such snapshot).
        throw error.code === "42704" ? new ConnectError(snapshotLost, Code.Unavailable) : error;
      });
      for (let next = queue.shift(); next !== undefined; next = queue.shift()) {
        await copyOut(reader, next.table, request, compression, pace);
        done.push(next.table);
        sizeBytes += next.table.storedBytes;
        await request.progress({ schemaVersions, tableCount: tables.length, tables: done.toSorted((x, y) => x.file.localeCompare(y.file)).map(tableRecord), sizeBytes });
      }
      await reader.close();
    };
    // On a failure the others stop too (no table is started, the copies under way are cut), and the
    // backup fails only once every worker has: nothing is stored after the caller has removed its files.
    let failure: { error: unknown } | undefined;
    await Promise.all(
      Array.from({ length: Math.max(1, Math.min(request.workers, tables.length)) }, () =>
        work().catch((error: unknown) => {
          // The first failure is the cause; the others' are its consequence (their connections cut).
          if (failure === undefined) {
            failure = { error };
            queue.length = 0;
            for (const client of clients) {
              client.end().catch(() => undefined);
            }
            for (const reader of readers) {
              reader.abort().catch(() => undefined);
            }
          }
        }),
      ),
    );
    if (failure !== undefined) {
      throw failure.error;
    }
    await request.afterStep?.("copy-tables");

    const sequences: BackupManifest["sequences"] = [];
    for (const found of await listSequences(coordinator, Object.keys(services).map((s) => names.physical(s)))) {
      const sequence = { schema: names.logical(found.schema)!, name: found.name };
      const { rows: state } = await coordinator.query<{ last_value: string; is_called: boolean }>(`select last_value::text, is_called from ${names.quoted(sequence)}`);
      sequences.push({ ...sequence, lastValue: state[0]!.last_value, isCalled: state[0]!.is_called });
    }
    await coordinator.query("commit");
    const manifest: BackupManifest = {
      format: compression === "zstd" ? backupFormat : gzipBackupFormat,
      tenantId: key.tenantId,
      backupId: key.backupId,
      createdAt: at.toISOString(),
      placement: request.placement,
      serverVersion: version,
      ...(compression === "zstd" ? { compression } : {}),
      services,
      tables,
      sequences,
    };
    await storage.put(key, manifestFile, Readable.from([sealManifest(request.dataKey, manifest)]));
    await request.afterStep?.("write-manifest");
    await storage.publish(key);
    await request.afterStep?.("publish");
    return manifest;
  } finally {
    await Promise.all([...clients.map((c) => c.end().catch(() => undefined)), ...readers.map((r) => r.abort().catch(() => undefined))]);
  }
}

/** Stores one table's COPY stream, read by `reader` (which writes it itself where storage has a local path for it), recording its rows, digest and stored size on `table`. */
async function copyOut(reader: TableReader, table: ManifestTable, request: TenantBackupRequest, compression: BackupCompression, pace: BackupPace): Promise<void> {
  const read: TableRead = {
    sql: `copy ${request.names.quoted(table)} (${columnList(table.columns)}) to stdout (format binary)`,
    compression,
    key: request.dataKey.key,
    context: fileContext(request.key, table.file),
    pace: pace.shared,
  };
  const localPath = await request.storage.stagedPath?.(request.key, table.file);
  if (localPath !== undefined) {
    ({ rows: table.rows, sha256: table.sha256, storedBytes: table.storedBytes } = await reader.readToFile(read, localPath));
    return;
  }
  const { sealed, done } = reader.read(read);
  // A failure of the read destroys the sealed stream, so the store fails rather than waits; the read's is the cause.
  const storing = request.storage.put(request.key, table.file, sealed).catch(async (error: unknown) => {
    // Storage that gave up holds the thread's next chunk: the read is cut.
    await reader.abort();
    throw error;
  });
  const [stored, copied] = await Promise.allSettled([storing, done]);
  if (copied.status === "rejected") {
    throw copied.reason;
  }
  if (stored.status === "rejected") {
    throw stored.reason;
  }
  table.storedBytes = stored.value;
  table.rows = copied.value.rows;
  table.sha256 = copied.value.sha256;
}

/** A manifest table as the backup's record lists it. */
export function tableRecord(table: ManifestTable): BackupTableRecord {
  return { name: qualifiedName(table), rows: table.rows, sha256: table.sha256 };
}
