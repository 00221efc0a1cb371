import { Code, ConnectError } from "@connectrpc/connect";
import { compressedFileEnding, type BackupCompression } from "./compressed-blocks.ts";

/**
 * The format written: version 1.1, whose tables are compressed with zstd
 * (1.0, written `tenantry-backup/1`, gzipped them). A reader takes any
 * `tenantry-backup/1.x` and refuses other majors.
 */
export const backupFormat = "tenantry-backup/1.1";

/** The format of the backups whose tables are gzipped, as Platforms before 1.1 wrote it. */
export const gzipBackupFormat = "tenantry-backup/1";

/** A column of a backed-up table, as PostgreSQL formats its type (`format_type`). */
export interface ManifestColumn {
  name: string;
  type: string;
}

/** One table of a backup and the file that holds its rows. */
export interface ManifestTable {
  schema: string;
  name: string;
  /** The file in the backup, a binary COPY stream, compressed (see {@link BackupManifest.compression}), then encrypted. */
  file: string;
  /** Its columns in order (generated columns left out: they are computed again). */
  columns: ManifestColumn[];
  rows: number;
  /** SHA-256 (hex) of the binary COPY stream, before compression. */
  sha256: string;
  /** Bytes the file takes in storage. */
  storedBytes: number;
}

/** A sequence's state when the backup was taken, read after every table. */
export interface ManifestSequence {
  schema: string;
  name: string;
  /** A bigint, as text. */
  lastValue: string;
  isCalled: boolean;
}

/** What a backup holds and how to restore it. */
export interface BackupManifest {
  format: string;
  tenantId: string;
  backupId: string;
  /** When the snapshot was taken (ISO 8601). */
  createdAt: string;
  /**
   * Where the data was read from: a pooled tenant's `database` is its pool
   * database and `schemaPrefix` its schemas' prefix (absent or empty: a
   * database of the tenant's own). Schemas are named by service throughout
   * the manifest, whichever the placement.
   */
  placement: { cluster: string; database: string; schemaPrefix?: string };
  /** PostgreSQL's `server_version` where it was read. */
  serverVersion: string;
  /** How the tables' files are compressed (format 1.1 on); absent: gzip. */
  compression?: "zstd";
  /** Each service's schema: the migrations applied to it in the snapshot, oldest first. */
  services: Record<string, { migrations: string[] }>;
  tables: ManifestTable[];
  sequences: ManifestSequence[];
}

/** The name of a table's file in a backup whose files are compressed with `compression`. */
export function tableFileName(index: number, compression: BackupCompression): string {
  return `table-${String(index + 1).padStart(4, "0")}.copy${compressedFileEnding[compression]}`;
}

/** How a backup's table files are compressed. */
export function compressionOf(manifest: Pick<BackupManifest, "compression">): BackupCompression {
  return manifest.compression ?? "gzip";
}

/** The schema-qualified name of a manifest table, as the API shows it. */
export function qualifiedName(table: Pick<ManifestTable, "schema" | "name">): string {
  return `${table.schema}.${table.name}`;
}

/** The schema version each service of a manifest was at: its newest migration applied. */
export function manifestVersions(manifest: Pick<BackupManifest, "services">): Record<string, string> {
  return Object.fromEntries(Object.entries(manifest.services).map(([service, { migrations }]) => [service, migrations.at(-1) ?? ""]));
}

/** Refuses a backup of another major format version: FAILED_PRECONDITION naming it. */
export function checkFormat(format: unknown, backupId: string): void {
  const [name, version] = String(format).split("/");
  const [ours, ourVersion] = backupFormat.split("/");
  const major = ourVersion!.split(".")[0];
  if (name !== ours || version === undefined || version.split(".")[0] !== major) {
    throw new ConnectError(
      `backup "${backupId}" is in format "${String(format)}", which this Platform does not read (it reads ${ours}/${major}.x); restore it with a Platform of that version`,
      Code.FailedPrecondition,
    );
  }
}
