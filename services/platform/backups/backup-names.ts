import { isTenantId, isUuid } from "../../mesh/index.ts";
import type { BackupKey } from "./backup-storage.ts";

// A store keeps backups under these names (paths, object keys): only the
// shapes Tenantry makes pass, so that none reaches outside its backup.

/** The tenant id, or an error when it is not one. */
export function checkTenant(tenantId: string): string {
  if (!isTenantId(tenantId)) {
    throw new Error(`not a tenant id: ${JSON.stringify(tenantId)}`);
  }
  return tenantId;
}

/** The backup id, or an error when it is not a UUID. */
export function checkBackup(backupId: string): string {
  if (!isUuid(backupId)) {
    throw new Error(`not a backup id: ${JSON.stringify(backupId)}`);
  }
  return backupId;
}

/** A backup file's name (lower-case letters, digits, dots and hyphens, not starting with a dot), or an error. */
export function checkFile(file: string): string {
  if (!/^[a-z0-9][a-z0-9.-]{0,99}$/.test(file)) {
    throw new Error(`not a backup file name: ${JSON.stringify(file)}`);
  }
  return file;
}

/** Both ids of a key, checked. */
export function checkKey(key: BackupKey): BackupKey {
  return { tenantId: checkTenant(key.tenantId), backupId: checkBackup(key.backupId) };
}

/** The error a store rejects with when a backup or file is not there (`code` "ENOENT", as the file system's). */
export function backupNotFound(message: string): NodeJS.ErrnoException {
  return Object.assign(new Error(message), { code: "ENOENT" });
}
