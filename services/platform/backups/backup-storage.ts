import type { Readable } from "node:stream";

/** Which backup of which tenant: where its files are kept. */
export interface BackupKey {
  tenantId: string;
  backupId: string;
}

/**
 * Where backups' files are kept. A backup is written file by file with
 * `put` and is not listed, nor its files readable with `get`, until
 * `publish`; `delete` removes it whether published or not. The local
 * directory is the first implementation; an S3-compatible store fits the
 * same shape (put objects under a prefix, publish by writing the marker
 * last, list by the marker).
 */
export interface BackupStorage {
  /** What it is, for logs and the audit log, such as `local:/var/lib/tenantry/backups`. */
  readonly description: string;
  /** Stores one file of an unpublished backup from `body`; resolves with the bytes stored. */
  put(key: BackupKey, file: string, body: Readable): Promise<number>;
  /**
   * Where a file of an unpublished backup may be written directly, by
   * whatever has its bytes (a backup's reading thread, which then needs no
   * `put`), as a file of this machine: storage that keeps files elsewhere
   * has no such method.
   */
  stagedPath?(key: BackupKey, file: string): Promise<string>;
  /** Makes a backup whose files are all put visible at once. */
  publish(key: BackupKey): Promise<void>;
  /** One file of a published backup; rejects with a NotFound error (`code` "ENOENT") when it is not there. */
  get(key: BackupKey, file: string): Promise<Readable>;
  /** The ids of a tenant's published backups. */
  list(tenantId: string): Promise<string[]>;
  /** Removes a backup, published or not; nothing happens when there is none. */
  delete(key: BackupKey): Promise<void>;
}
