import { Migration } from "@mikro-orm/migrations";

/**
 * Write freezes of tenants, each a lease its Platform instance renews; the
 * service instances watching the change feed, kept while they are seen; and
 * their acknowledgements of each freeze.
 */
export class AddWriteFreezes extends Migration {
  override up(): void {
    this.addSql(`create table platform.write_freezes (
      tenant_id varchar(40) primary key references platform.tenants (id),
      freeze_id uuid not null unique,
      actor varchar(100) not null,
      created_at timestamptz(3) not null,
      expires_at timestamptz(3) not null,
      lease_until timestamptz(3) not null,
      acknowledged_at timestamptz(3)
    )`);
    this.addSql(`create table platform.feed_watchers (
      instance_id uuid primary key,
      service varchar(100) not null,
      seen_at timestamptz(3) not null
    )`);
    this.addSql(`create table platform.write_freeze_acknowledgements (
      freeze_id uuid not null references platform.write_freezes (freeze_id) on delete cascade,
      instance_id uuid not null,
      service varchar(100) not null,
      acknowledged_at timestamptz(3) not null,
      primary key (freeze_id, instance_id)
    )`);
  }
}
