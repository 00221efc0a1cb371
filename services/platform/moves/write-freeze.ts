import pg from "pg";
import type { ClusterRegistry } from "../cluster-registry.ts";
import { endRoleSessions } from "./role-sessions.ts";

/** The tenant whose writes are frozen, where it is served from while they are. */
export interface FrozenTenant {
  tenantId: string;
  cluster: string;
  database: string;
  /** The tenant's login role. */
  role: string;
}

/** Ends a freeze. */
export type Release = () => Promise<void>;

/**
 * Freezes a tenant's writes for a move's cutover. Once `freeze` resolves,
 * no write of the tenant runs on its database and none starts until the
 * release; reads go on. The freeze belongs to the Platform that made it:
 * should that stop, `thaw` ends what it left.
 */
export interface WriteFreeze {
  freeze(tenant: FrozenTenant): Promise<Release>;
  /** Ends any freeze of the tenant still in force (one a stopped Platform left); nothing happens when none is. */
  thaw(tenant: FrozenTenant): Promise<void>;
}

/**
 * A write freeze the tenant's database enforces itself: the tenant's role
 * has its new sessions start read-only (`default_transaction_read_only`),
 * and the sessions it had (writes under way among them) are ended, so
 * services reconnect read-only. Reads go on; writes fail with SQLSTATE
 * 25006, which services answer UNAVAILABLE (retry). Not a lease: a
 * Platform that stops while it holds one leaves the tenant read-only
 * until the move is resumed or rolled back.
 */
export class SessionWriteFreeze implements WriteFreeze {
  readonly #clusters: ClusterRegistry;

  constructor(clusters: ClusterRegistry) {
    this.#clusters = clusters;
  }

  async freeze(tenant: FrozenTenant): Promise<Release> {
    await this.#clusters.admin(tenant.cluster, async (admin) => {
      await admin.query(`alter role ${pg.escapeIdentifier(tenant.role)} set default_transaction_read_only = on`);
      // Sessions that began after this moment read the setting; those before are ended.
      const { rows } = await admin.query<{ now: Date }>("select clock_timestamp() as now");
      await endRoleSessions(admin, tenant.role, rows[0]!.now);
    });
    let released = false;
    return async () => {
      if (!released) {
        released = true;
        await this.thaw(tenant);
      }
    };
  }

  async thaw(tenant: FrozenTenant): Promise<void> {
    await this.#clusters.admin(tenant.cluster, async (admin) => {
      const { rows } = await admin.query<{ frozen: boolean }>(
        `select exists (select 1 from pg_db_role_setting s join pg_roles r on r.oid = s.setrole
           where r.rolname = $1 and s.setdatabase = 0 and 'default_transaction_read_only=on' = any(s.setconfig)) as frozen`,
        [tenant.role],
      );
      if (!rows[0]!.frozen) {
        return;
      }
      await admin.query(`alter role ${pg.escapeIdentifier(tenant.role)} reset default_transaction_read_only`);
      // Its sessions opened meanwhile are read-only for good: end them too.
      const now = await admin.query<{ now: Date }>("select clock_timestamp() as now");
      await endRoleSessions(admin, tenant.role, now.rows[0]!.now);
    });
  }
}
