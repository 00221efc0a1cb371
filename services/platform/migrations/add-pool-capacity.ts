import { Migration } from "@mikro-orm/migrations";

/**
 * A cluster's pooled tenants are counted against a capacity of their own:
 * thousands of small tenants sharing a few pool databases must not take
 * the places of dedicated tenants, each a database of its own.
 */
export class AddPoolCapacity extends Migration {
  override up(): void {
    this.addSql("alter table platform.clusters add column pool_capacity integer not null default 20000");
  }
}
