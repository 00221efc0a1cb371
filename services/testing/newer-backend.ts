import { Migration } from "@mikro-orm/migrations";
import { migrations } from "../backend/migrations/index.ts";

/** The newest migration of the Backend the tenants run now. */
export const releasedBackendVersion = migrations.at(-1)!.name;

/** A newer Backend's migration: an index, which the older code does not notice. */
class IndexEntriesByCreation extends Migration {
  override up(): void {
    this.addSql("create index entries_created_at on entries (created_at)");
  }
}

/** The name of that newer migration, numbered after the released ones. */
export const upcomingBackendVersion = `${String(migrations.length + 1).padStart(4, "0")}-index-entries-by-creation`;

/** The migrations of a newer Backend than the one released: what a fleet migration rolls out in specs. */
export const newerBackendMigrations = [...migrations, { name: upcomingBackendVersion, class: IndexEntriesByCreation }];
