import { Migration } from "@mikro-orm/migrations";

/**
 * Backups of tenants and restores of them (in place, clones, verification
 * drills), each restore's progress recorded step by step; and the change
 * feed announces a tenant's database changing, as a restore switches it.
 */
export class AddBackups extends Migration {
  override up(): void {
    this.addSql(`create table platform.backups (
      id uuid primary key,
      tenant_id varchar(40) not null,
      label varchar(200) not null default '',
      state varchar(20) not null,
      error text,
      cluster varchar(40) not null,
      database varchar(63) not null,
      size_bytes bigint not null default 0,
      tables jsonb not null default '[]',
      schema_versions jsonb not null default '{}',
      created_at timestamptz(3) not null,
      finished_at timestamptz(3),
      verified_at timestamptz(3),
      verify_result varchar(20),
      verify_error text
    )`);
    this.addSql(`create index backups_newest on platform.backups (created_at desc, id desc)`);
    this.addSql(`create index backups_of_tenant on platform.backups (tenant_id, created_at desc, id desc)`);
    this.addSql(`create index backups_running on platform.backups (state) where state = 'running'`);
    this.addSql(`create table platform.restores (
      id uuid primary key,
      backup_id uuid not null,
      kind varchar(20) not null,
      tenant_id varchar(40) not null,
      source_tenant_id varchar(40) not null,
      state varchar(20) not null,
      step varchar(40),
      undo_step varchar(40),
      error text,
      cluster varchar(40) not null,
      database varchar(63) not null,
      previous_database varchar(63),
      previous_status varchar(20),
      role varchar(63),
      role_password bytea,
      keep_until timestamptz(3),
      previous_dropped boolean not null default false,
      created_at timestamptz(3) not null,
      finished_at timestamptz(3)
    )`);
    this.addSql(`create index restores_of_tenant on platform.restores (tenant_id, created_at desc)`);
    this.addSql(`create index restores_of_backup on platform.restores (backup_id)`);
    this.addSql(`drop trigger tenants_announce_change on platform.tenants`);
    this.addSql(`create trigger tenants_announce_change
      after insert or update of status, tier, cluster, database, role, role_password on platform.tenants
      for each row execute function platform.announce_tenant_change()`);
  }
}
