export { backupFormat, type BackupManifest } from "./backup-manifest.ts";
export { BackupSchedule, type BackupScheduleOptions, type ScheduleRun } from "./backup-schedule.ts";
export type { BackupKey, BackupStorage } from "./backup-storage.ts";
export { CronSchedule } from "./cron-schedule.ts";
export { LocalBackupStorage } from "./local-backup-storage.ts";
export { requested, restoreSteps, undoSteps, type RestoreStep } from "./restore-steps.ts";
export { backupSteps, type BackupStep } from "./tenant-backup.ts";
export { TenantBackups, type BackupTaking, type TenantBackupsOptions } from "./tenant-backups.ts";
export { TenantRestores, type RestoreRequest, type TenantRestoresOptions } from "./tenant-restores.ts";
