import { Migration } from "@mikro-orm/migrations";

/**
 * A backup records how many tables it holds in all once its snapshot is
 * taken, so that a running one shows how far it has come. Backups already
 * taken hold the tables they list.
 */
export class AddBackupTableCount extends Migration {
  override up(): void {
    this.addSql(`alter table platform.backups add column table_count integer not null default 0`);
    this.addSql(`update platform.backups set table_count = jsonb_array_length(tables) where state <> 'running'`);
  }
}
