import { Code, ConnectError } from "@connectrpc/connect";
import { randomBytes } from "node:crypto";
import { SecretBox } from "../../mesh/index.ts";
import { checkFormat, gzipBackupFormat, type BackupManifest } from "./backup-manifest.ts";
import type { BackupKey } from "./backup-storage.ts";

/** The file every backup has: its manifest, stored last. */
export const manifestFile = "manifest.json";

/**
 * The manifest as stored: the format and ids in the clear (so that a
 * reader can tell a backup it does not read), the backup's data key sealed
 * with the master key for this tenant and backup, and the manifest itself
 * sealed with the data key.
 */
interface ManifestEnvelope {
  format: string;
  tenantId: string;
  backupId: string;
  dataKey: string;
  manifest: string;
}

/** A backup's data key: every file of it is encrypted with it (AES-256-GCM). */
export interface DataKey {
  key: Buffer;
  /** Sealed with the master key, bound to the tenant and backup. */
  sealed: Buffer;
}

/** The context a backup's data key is sealed for. */
function dataKeyContext(key: BackupKey): string {
  return `backup:${key.tenantId}:${key.backupId}:data-key`;
}

/**
 * The context (associated data) a file of a backup is encrypted for: a
 * file moved to another table, backup or tenant does not open. The same
 * for every format 1.x (it names the major version only, as 1.0 wrote it).
 */
export function fileContext(key: BackupKey, file: string): string {
  return `${gzipBackupFormat}:${key.tenantId}:${key.backupId}:${file}`;
}

/** A new random data key for a backup. */
export function newDataKey(box: SecretBox, key: BackupKey): DataKey {
  const dataKey = randomBytes(32);
  return { key: dataKey, sealed: box.seal(dataKey.toString("base64url"), dataKeyContext(key)) };
}

/** The manifest file's bytes. */
export function sealManifest(dataKey: DataKey, manifest: BackupManifest): Buffer {
  const key = { tenantId: manifest.tenantId, backupId: manifest.backupId };
  const envelope: ManifestEnvelope = {
    format: manifest.format,
    tenantId: manifest.tenantId,
    backupId: manifest.backupId,
    dataKey: dataKey.sealed.toString("base64url"),
    manifest: new SecretBox(dataKey.key).seal(JSON.stringify(manifest), fileContext(key, manifestFile)).toString("base64url"),
  };
  return Buffer.from(`${JSON.stringify(envelope, null, 1)}\n`);
}

/**
 * Reads a manifest file of the backup `key` names, with its data key.
 * FAILED_PRECONDITION for another major format (naming it), a manifest of
 * another backup, or one that does not open (changed, or sealed with
 * another master key).
 */
export function openManifest(box: SecretBox, key: BackupKey, bytes: Buffer): { manifest: BackupManifest; dataKey: DataKey } {
  const unreadable = (why: string) => new ConnectError(`the manifest of backup "${key.backupId}" ${why}`, Code.FailedPrecondition);
  let envelope: Partial<ManifestEnvelope>;
  try {
    envelope = JSON.parse(bytes.toString("utf8")) as Partial<ManifestEnvelope>;
  } catch {
    throw unreadable("is not JSON: it was changed or cut short");
  }
  checkFormat(envelope.format, key.backupId);
  if (envelope.tenantId !== key.tenantId || envelope.backupId !== key.backupId) {
    throw unreadable(`names backup "${String(envelope.backupId)}" of tenant "${String(envelope.tenantId)}": the files were moved`);
  }
  try {
    const sealed = Buffer.from(String(envelope.dataKey), "base64url");
    const dataKey = { key: Buffer.from(box.open(sealed, dataKeyContext(key)), "base64url"), sealed };
    const manifest = JSON.parse(new SecretBox(dataKey.key).open(Buffer.from(String(envelope.manifest), "base64url"), fileContext(key, manifestFile))) as BackupManifest;
    return { manifest, dataKey };
  } catch {
    throw unreadable("does not open: it was changed, or sealed with another TENANTRY_MASTER_KEY");
  }
}
