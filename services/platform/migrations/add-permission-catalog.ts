import { Migration } from "@mikro-orm/migrations";

/**
 * The permissions each data-owning service declares, and per tenant the
 * digest of the catalog Auth last merged into it (null: none recorded yet,
 * so the tenant counts as behind on Auth).
 */
export class AddPermissionCatalog extends Migration {
  override up(): void {
    this.addSql(`alter table platform.schema_services add column permissions jsonb not null default '[]'`);
    this.addSql(`alter table platform.tenant_schema_versions add column permissions_digest varchar(64)`);
  }
}
