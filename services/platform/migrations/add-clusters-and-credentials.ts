import { Migration } from "@mikro-orm/migrations";

/** Clusters, each tenant's placement and login role, and the provisioning step reached. */
export class AddClustersAndCredentials extends Migration {
  override up(): void {
    this.addSql(`create table platform.clusters (
      name varchar(40) primary key,
      host varchar(255) not null,
      port integer not null,
      admin_user varchar(63) not null,
      admin_password bytea not null,
      capacity integer not null check (capacity > 0),
      region varchar(40) not null default '',
      state varchar(20) not null default 'accepting',
      template_password bytea,
      template_versions jsonb,
      created_at timestamptz(3) not null default now(),
      updated_at timestamptz(3) not null default now()
    )`);
    this.addSql(`alter table platform.tenants
      add column cluster varchar(40) references platform.clusters (name),
      add column role varchar(63) unique,
      add column role_password bytea,
      add column provisioning_step varchar(30),
      add column attempts integer not null default 0`);
    this.addSql(`create index tenants_cluster on platform.tenants (cluster)`);
    this.addSql(`create index tenants_unfinished on platform.tenants (id) where status in ('provisioning', 'offboarding')`);
  }
}
