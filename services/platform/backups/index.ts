export { downloadBackup, downloadFormat, restoreScript, type DownloadManifest } from "./backup-download.ts";
export { backupFormat, type BackupManifest } from "./backup-manifest.ts";
export type { BackupKey, BackupStorage } from "./backup-storage.ts";
export { LocalBackupStorage } from "./local-backup-storage.ts";
export { requested, restoreSteps, undoSteps, type RestoreStep } from "./restore-steps.ts";
export { SelfServeBackups, type SelfServeBackupsOptions } from "./self-serve-backups.ts";
export { backupSteps, type BackupStep } from "./tenant-backup.ts";
export { TenantBackups, type TenantBackupsOptions } from "./tenant-backups.ts";
export { TenantRestores, type RestoreRequest, type TenantRestoresOptions } from "./tenant-restores.ts";
