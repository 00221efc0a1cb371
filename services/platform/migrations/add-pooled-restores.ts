import { Migration } from "@mikro-orm/migrations";

/**
 * Restores of pooled tenants: a restore records the placement it restores
 * into, and for a pooled one the prefix of the schemas it loads (in place,
 * a new generation of the tenant's schemas beside those it replaces, whose
 * prefix is kept for an undo).
 */
export class AddPooledRestores extends Migration {
  override up(): void {
    this.addSql(`alter table platform.restores
      add column placement varchar(20) not null default 'dedicated',
      add column schema_prefix varchar(48) not null default '',
      add column previous_schema_prefix varchar(48)`);
  }
}
