import { Migration } from "@mikro-orm/migrations";

/**
 * A pool database is `ready` or `draining` (SetPoolDatabaseState): `full`
 * was never set, since whether one has room is counted from its tenants.
 * One marked `full` by hand took no tenants: it stays so, as draining.
 */
export class RemoveFullPoolState extends Migration {
  override up(): void {
    this.addSql("update platform.pool_databases set state = 'draining' where state = 'full'");
    this.addSql("alter table platform.pool_databases add constraint pool_databases_state_check check (state in ('ready', 'draining'))");
  }
}
