import { Migration } from "@mikro-orm/migrations";

/**
 * Moves of tenants' databases between clusters, each one's progress
 * recorded step by step; at most one running per tenant.
 */
export class AddMoves extends Migration {
  override up(): void {
    this.addSql(`create table platform.moves (
      id uuid primary key,
      tenant_id varchar(40) not null,
      mode varchar(20) not null,
      state varchar(20) not null,
      step varchar(40) not null,
      error text,
      source_cluster varchar(40) not null,
      source_database varchar(63) not null,
      target_cluster varchar(40) not null,
      target_database varchar(63) not null,
      target_role_existed boolean,
      compare_digests boolean not null default false,
      backup_id uuid,
      tables_copied integer not null default 0,
      table_count integer not null default 0,
      freeze_ms integer,
      created_at timestamptz(3) not null,
      switched_at timestamptz(3),
      finished_at timestamptz(3),
      keep_until timestamptz(3),
      source_dropped boolean not null default false
    )`);
    this.addSql(`create unique index moves_one_running_per_tenant on platform.moves (tenant_id) where state = 'running'`);
    this.addSql(`create index moves_newest on platform.moves (created_at desc, id desc)`);
    this.addSql(`create index moves_of_tenant on platform.moves (tenant_id, created_at desc, id desc)`);
    this.addSql(`create index moves_kept on platform.moves (keep_until) where state = 'succeeded' and not source_dropped`);
  }
}
