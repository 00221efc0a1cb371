import { Migration } from "@mikro-orm/migrations";

/** Creates the tenant registry and the ledger of the schema versions each service reported. */
export class CreateRegistry extends Migration {
  override up(): void {
    this.addSql(`create schema if not exists platform`);
    this.addSql(`create table platform.tenants (
      id varchar(40) primary key,
      display_name varchar(200) not null,
      tier varchar(20) not null,
      status varchar(20) not null,
      database varchar(63) not null unique,
      error text,
      created_at timestamptz(3) not null default now(),
      updated_at timestamptz(3) not null default now()
    )`);
    this.addSql(`create table platform.tenant_schema_versions (
      tenant_id varchar(40) not null references platform.tenants (id),
      service varchar(40) not null,
      version varchar(200) not null,
      updated_at timestamptz(3) not null default now(),
      primary key (tenant_id, service)
    )`);
  }
}
