import { Migration } from "@mikro-orm/migrations";

/**
 * Scheduled backups record the slot they were taken for, so that any
 * Platform knows from the registry which tenants a slot has done; and a
 * tenant records its final backup, which offboarding takes instead of an
 * export file.
 */
export class AddBackupSchedules extends Migration {
  override up(): void {
    this.addSql(`alter table platform.backups add column scheduled_for timestamptz(3)`);
    this.addSql(`create index backups_of_slot on platform.backups (scheduled_for, tenant_id) where scheduled_for is not null`);
    this.addSql(`alter table platform.tenants add column final_backup_id uuid`);
  }
}
