import { Migration } from "@mikro-orm/migrations";

/**
 * Creates the `entries` table, with the indexes that listing newest-first and
 * by tag use, in the tenant's Backend schema (the migrator's search_path).
 * The schema exists before, so the `create schema` this once began with is gone.
 */
export class CreateEntries extends Migration {
  override up(): void {
    this.addSql(`create table entries (
      id uuid primary key,
      title varchar(200) not null,
      body text not null default '',
      tags text[] not null default '{}',
      version integer not null default 1,
      created_at timestamptz(3) not null default now(),
      updated_at timestamptz(3) not null default now()
    )`);
    this.addSql(`create index entries_newest_idx on entries (created_at desc, id desc)`);
    this.addSql(`create index entries_tags_idx on entries using gin (tags)`);
  }
}
