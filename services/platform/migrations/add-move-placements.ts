import { Migration } from "@mikro-orm/migrations";

/**
 * Moves between placements: each move records the tenant's placement and
 * the prefix of the services' schemas on both sides, and, for a promotion to a database of its own, the password of
 * the login its role gets there (sealed), which the tenant's record takes
 * at the switch. Moves recorded before are dedicated on both sides.
 */
export class AddMovePlacements extends Migration {
  override up(): void {
    this.addSql(`alter table platform.moves
      add column source_placement varchar(20) not null default 'dedicated',
      add column target_placement varchar(20) not null default 'dedicated',
      add column source_schema_prefix varchar(48) not null default '',
      add column target_schema_prefix varchar(48) not null default '',
      add column target_role_password bytea`);
  }
}
