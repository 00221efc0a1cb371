import { Migration } from "@mikro-orm/migrations";

/**
 * Once created schema `auth`. The migrator now runs in the tenant's Auth
 * schema, which exists before any migration does (the migrator creates it
 * in a dedicated database, Platform in a pool database), so this does
 * nothing; it stays for the migration ledgers that name it.
 */
export class CreateAuthSchema extends Migration {
  override up(): void {}
}
