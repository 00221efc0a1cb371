import { Code, ConnectError } from "@connectrpc/connect";
import { once } from "node:events";
import type { Readable } from "node:stream";
import pg from "pg";
import { pack, type Pack } from "tar-stream";
import { compressionOf, qualifiedName, type BackupManifest, type ManifestTable } from "./backup-manifest.ts";
import { fileContext, type DataKey } from "./backup-envelope.ts";
import type { BackupKey, BackupStorage } from "./backup-storage.ts";
import { openStream } from "./sealed-stream.ts";
import { columnList, quoted } from "./tenant-catalog.ts";

/**
 * The format of a download's manifest.json; a reader takes any
 * `tenantry-download/1.x`. A backup whose tables are gzipped downloads as
 * 1.0 (written `tenantry-download/1`); one whose are compressed with
 * zstd as 1.1, which says so (`compression`).
 */
export const downloadFormat = "tenantry-download/1.1";

/** The format of the download of a backup whose tables are gzipped. */
export const gzipDownloadFormat = "tenantry-download/1";

/** The manifest of a download: a backup's manifest as the tenant may read it, without where it was stored. */
export interface DownloadManifest {
  format: string;
  tenantId: string;
  backupId: string;
  createdAt: string;
  serverVersion: string;
  /** How the tables' files are compressed (format 1.1 on); absent: gzip. */
  compression?: "zstd";
  services: BackupManifest["services"];
  tables: { schema: string; name: string; file: string; columns: ManifestTable["columns"]; rows: number; sha256: string }[];
  sequences: BackupManifest["sequences"];
}

/** What {@link downloadBackup} sends: a SUCCEEDED backup, opened. */
export interface BackupDownloadSource {
  key: BackupKey;
  manifest: BackupManifest;
  dataKey: DataKey;
  storage: BackupStorage;
}

/** A file of the archive: its name, its size, and how to read it. */
interface ArchiveFile {
  name: string;
  size: number;
  body: () => Promise<Iterable<Buffer> | AsyncIterable<Buffer>>;
}

/** A table file's bytes once decrypted: what was stored, less the IV (12 bytes) and the auth tag (16) around it. */
const sealingBytes = 12 + 16;

const blockBytes = 512;

/**
 * A backup as one tar archive of plain files (see the contract's
 * DownloadBackup): manifest.json, restore.sql, then every table's file,
 * decrypted (still compressed, as stored: their size is known before
 * they are read). `size` is the archive's length in bytes,
 * known before it is sent; `bytes()` reads it from storage as it is
 * consumed, checking every file's auth tag, and fails (FAILED_PRECONDITION
 * naming the file) on a file that is missing or damaged.
 */
export function downloadBackup(source: BackupDownloadSource): { size: number; bytes: () => AsyncIterable<Buffer> } {
  const { key, manifest, dataKey, storage } = source;
  const plain = (text: string) => {
    const bytes = Buffer.from(text);
    return { size: bytes.length, body: async () => [bytes] };
  };
  const files: ArchiveFile[] = [
    { name: "manifest.json", ...plain(`${JSON.stringify(downloadManifest(manifest), null, 1)}\n`) },
    { name: "restore.sql", ...plain(restoreScript(manifest)) },
    ...manifest.tables.map((table) => ({
      name: table.file,
      size: table.storedBytes - sealingBytes,
      body: async () => {
        const what = `file ${table.file} (${qualifiedName(table)}) of backup "${key.backupId}"`;
        const stored = await storage.get(key, table.file).catch((error: NodeJS.ErrnoException) => {
          throw error.code === "ENOENT" ? new ConnectError(`${what} is missing from storage`, Code.FailedPrecondition) : error;
        });
        return opened(stored, dataKey, fileContext(key, table.file), what);
      },
    })),
  ];
  const size = files.reduce((sum, file) => sum + blockBytes + Math.ceil(file.size / blockBytes) * blockBytes, 0) + 2 * blockBytes;
  const mtime = new Date(manifest.createdAt);
  return {
    size,
    async *bytes() {
      const archive = pack();
      const stop = new AbortController();
      const writing = writeFiles(archive, files, mtime, stop.signal).catch((error: unknown) => archive.destroy(error as Error));
      try {
        for await (const chunk of archive) {
          yield chunk as Buffer;
        }
      } finally {
        // Read to the end, or given up by the consumer: either way the writer stops.
        stop.abort();
        archive.destroy();
        await writing;
      }
    },
  };
}

/** The decrypted stream of a stored file; a failed auth tag is FAILED_PRECONDITION. */
async function* opened(stored: Readable, dataKey: DataKey, context: string, what: string): AsyncIterable<Buffer> {
  const decrypted = stored.pipe(openStream(dataKey.key, context, what));
  stored.once("error", (error) => decrypted.destroy(error));
  try {
    for await (const chunk of decrypted) {
      yield chunk as Buffer;
    }
  } catch (error) {
    const message = (error as Error).message;
    throw message.includes("integrity check") ? new ConnectError(message, Code.FailedPrecondition) : error;
  } finally {
    stored.destroy();
  }
}

/** Writes each file as an entry of `archive`, in order, waiting when it is not read; then ends it. */
async function writeFiles(archive: Pack, files: ArchiveFile[], mtime: Date, signal: AbortSignal): Promise<void> {
  for (const file of files) {
    let written: (error?: Error | null) => void = () => {};
    const done = new Promise<void>((resolve, reject) => (written = (error) => (error ? reject(error) : resolve(undefined))));
    const entry = archive.entry({ name: file.name, size: file.size, mode: 0o644, mtime, type: "file" }, (error) => written(error));
    // A file that fails is thrown from its read below; the entry then reports the same failure, as an event and to `done`.
    entry.on("error", () => undefined);
    done.catch(() => undefined);
    try {
      for await (const chunk of await file.body()) {
        if (!entry.write(chunk)) {
          await once(entry, "drain", { signal });
        }
      }
    } catch (error) {
      entry.destroy(error as Error);
      throw error;
    }
    entry.end(undefined);
    await done;
  }
  archive.finalize();
}

/** The manifest a download holds. */
export function downloadManifest(manifest: BackupManifest): DownloadManifest {
  const zstd = compressionOf(manifest) === "zstd";
  return {
    format: zstd ? downloadFormat : gzipDownloadFormat,
    tenantId: manifest.tenantId,
    backupId: manifest.backupId,
    createdAt: manifest.createdAt,
    serverVersion: manifest.serverVersion,
    ...(zstd ? { compression: "zstd" as const } : {}),
    services: manifest.services,
    tables: manifest.tables.map(({ schema, name, file, columns, rows, sha256 }) => ({ schema, name, file, columns, rows, sha256 })),
    sequences: manifest.sequences,
  };
}

/**
 * The psql script of a download: in one transaction, the schemas, the
 * tables with their columns (no constraints, indexes or defaults: the
 * data, not the services' schema), every table loaded from its file
 * (through `zstd -dc` or `gzip -dc`, as it is compressed), and the
 * sequences at their values.
 */
export function restoreScript(manifest: BackupManifest): string {
  const decompress = compressionOf(manifest) === "zstd" ? "zstd -dc" : "gzip -dc";
  const lines = [
    `-- Backup ${manifest.backupId} of tenant "${manifest.tenantId}", taken ${manifest.createdAt} (PostgreSQL ${manifest.serverVersion}).`,
    "-- Loads it into the database psql is connected to; run it in the folder it was unpacked in:",
    "--   psql -v ON_ERROR_STOP=1 -d DATABASE -f restore.sql",
    ...(decompress === "zstd -dc" ? ["-- It reads the tables' files with the zstd command (Debian's and Ubuntu's package zstd)."] : []),
    "\\set ON_ERROR_STOP on",
    "begin;",
    ...Object.keys(manifest.services).map((schema) => `create schema if not exists ${pg.escapeIdentifier(schema)};`),
    ...manifest.tables.map((table) => `create table ${quoted(table)} (${table.columns.map((c) => `${pg.escapeIdentifier(c.name)} ${c.type}`).join(", ")});`),
    ...manifest.tables.map((table) => `\\copy ${quoted(table)}${table.columns.length === 0 ? "" : ` (${columnList(table.columns)})`} from program '${decompress} ${table.file}' with (format binary)`),
    ...manifest.sequences.flatMap((sequence) => [
      `create sequence if not exists ${quoted(sequence)};`,
      `select setval(${pg.escapeLiteral(quoted(sequence))}, ${BigInt(sequence.lastValue)}, ${sequence.isCalled});`,
    ]),
    "commit;",
  ];
  return `${lines.join("\n")}\n`;
}
