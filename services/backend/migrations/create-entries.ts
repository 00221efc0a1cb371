import { Migration } from "@mikro-orm/migrations";

/** Creates `backend.entries`, with the indexes that listing newest-first and by tag use. */
export class CreateEntries extends Migration {
  override up(): void {
    this.addSql(`create schema if not exists backend`);
    this.addSql(`create table backend.entries (
      id uuid primary key,
      title varchar(200) not null,
      body text not null default '',
      tags text[] not null default '{}',
      version integer not null default 1,
      created_at timestamptz(3) not null default now(),
      updated_at timestamptz(3) not null default now()
    )`);
    this.addSql(`create index entries_newest_idx on backend.entries (created_at desc, id desc)`);
    this.addSql(`create index entries_tags_idx on backend.entries using gin (tags)`);
  }
}
