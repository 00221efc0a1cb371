import { Migration } from "@mikro-orm/migrations";

/** Creates schema `auth`, which Auth owns in every tenant database. */
export class CreateAuthSchema extends Migration {
  override up(): void {
    this.addSql(`create schema if not exists auth`);
  }
}
