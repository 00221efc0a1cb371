import { Migration } from "@mikro-orm/migrations";

/**
 * Suspension, offboarding and the audit log; and a trigger that announces
 * every change services care about (status, tier, placement, credentials)
 * on the `tenantry_tenant_changes` channel, in the same transaction.
 */
export class AddLifecycleAndAudit extends Migration {
  override up(): void {
    this.addSql(`alter table platform.tenants rename column provisioning_step to lifecycle_step`);
    this.addSql(`alter table platform.tenants
      add column suspended_reason text,
      add column purge_after timestamptz(3),
      add column export_path text`);
    this.addSql(`create table platform.audit_events (
      id bigint generated always as identity primary key,
      occurred_at timestamptz(3) not null default now(),
      actor varchar(100) not null,
      action varchar(50) not null,
      tenant_id varchar(40),
      outcome varchar(20) not null,
      detail jsonb not null default '{}'
    )`);
    this.addSql(`create index audit_events_tenant on platform.audit_events (tenant_id, id)`);
    this.addSql(`create function platform.announce_tenant_change() returns trigger language plpgsql as $$
      begin
        perform pg_notify('tenantry_tenant_changes', new.id || ' ' || new.status);
        return new;
      end
    $$`);
    this.addSql(`create trigger tenants_announce_change
      after insert or update of status, tier, cluster, role, role_password on platform.tenants
      for each row execute function platform.announce_tenant_change()`);
  }
}
