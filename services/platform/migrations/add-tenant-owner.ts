import { Migration } from "@mikro-orm/migrations";

/** The owner asked for at CreateTenant, kept (password sealed) until Auth has created it. */
export class AddTenantOwner extends Migration {
  override up(): void {
    this.addSql(`alter table platform.tenants add column owner_email varchar(320), add column owner_password bytea`);
  }
}
