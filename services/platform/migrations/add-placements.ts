import { Migration } from "@mikro-orm/migrations";

/**
 * Placements: a tenant's data is in a database of its own (dedicated, as
 * every tenant before) or in schemas of its own inside a pool database
 * shared with other tenants (pooled). A pooled tenant's `database` is its
 * pool database, `role` its NOLOGIN role, and it has no role password: its
 * route logs in as the pool database's role, recorded here with its
 * password sealed.
 */
export class AddPlacements extends Migration {
  override up(): void {
    this.addSql(`alter table platform.tenants
      add column placement varchar(20) not null default 'dedicated',
      add column schema_prefix varchar(48) not null default ''`);
    this.addSql(`create table platform.pool_databases (
      cluster varchar(40) not null,
      name varchar(63) not null,
      role varchar(63) not null,
      role_password bytea not null,
      state varchar(20) not null,
      created_at timestamptz(3) not null,
      primary key (cluster, name)
    )`);
    // Pooled tenants share their pool database's name: only dedicated ones own theirs.
    this.addSql(`alter table platform.tenants drop constraint tenants_database_key`);
    this.addSql(`create unique index tenants_dedicated_database on platform.tenants (database) where placement = 'dedicated'`);
    this.addSql(`create index tenants_of_pool_database on platform.tenants (cluster, database) where placement = 'pooled'`);
  }
}
