import { Migration } from "@mikro-orm/migrations";

/** The ledger records each migration attempt's outcome; the data-owning services are registered. */
export class AddFleetLedger extends Migration {
  override up(): void {
    this.addSql(`alter table platform.tenant_schema_versions
      add column status varchar(20) not null default 'succeeded',
      add column error text,
      add column attempts integer not null default 1,
      add column attempted_at timestamptz(3) not null default now()`);
    this.addSql(`create index tenant_schema_versions_failed on platform.tenant_schema_versions (service) where status = 'failed'`);
    this.addSql(`create table platform.schema_services (
      name varchar(40) primary key,
      address varchar(255) not null,
      latest_version varchar(200) not null,
      migrations jsonb not null,
      updated_at timestamptz(3) not null default now()
    )`);
  }
}
