import type { MikroORM } from "@mikro-orm/postgresql";
import pg from "pg";
import type { ClusterRegistry } from "../cluster-registry.ts";
import type { TenantWriteFreezes } from "../freezes/index.ts";
import { findWriteFreeze } from "../stores/index.ts";
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

/** Who freezes, and for how long at most. */
export interface FreezeHolder {
  /** Names the holder (a move, by its id): `thaw` ends only its freeze. */
  holder: string;
  /** The freeze ends by itself after this long, whatever happens. */
  ttlMs: number;
}

/**
 * Freezes a tenant's writes for a move's cutover. Once `freeze` resolves,
 * no write of the tenant runs on its database and none starts until the
 * release; reads go on. Should the Platform that froze stop, `thaw` ends
 * what it left.
 */
export interface WriteFreeze {
  freeze(tenant: FrozenTenant, holder: FreezeHolder): Promise<Release>;
  /** Ends the freeze of the tenant `holder` left in force, if any. */
  thaw(tenant: FrozenTenant, holder: string): Promise<void>;
}

/**
 * The write freeze every service holds (TenantWriteFreezes): each service
 * instance watching the change feed holds the tenant's new writes, has
 * drained those under way and has said so; a lease this Platform renews.
 * A freeze `holder` left (a Platform that stopped in a cutover) is ended
 * before a new one is made.
 */
export class ServiceWriteFreeze implements WriteFreeze {
  readonly #freezes: TenantWriteFreezes;
  readonly #orm: MikroORM;

  constructor(freezes: TenantWriteFreezes, orm: MikroORM) {
    this.#freezes = freezes;
    this.#orm = orm;
  }

  async freeze(tenant: FrozenTenant, { holder, ttlMs }: FreezeHolder): Promise<Release> {
    await this.thaw(tenant, holder);
    const { freezeId } = await this.#freezes.freeze(tenant.tenantId, { ttlMs, actor: holder });
    return async () => void (await this.#freezes.thaw(tenant.tenantId, freezeId));
  }

  async thaw(tenant: FrozenTenant, holder: string): Promise<void> {
    const current = await findWriteFreeze(this.#orm.em.fork(), tenant.tenantId);
    if (current?.actor === holder) {
      await this.#freezes.thaw(tenant.tenantId, current.freezeId);
    }
  }
}

/**
 * A write freeze the tenant's database enforces itself, whoever writes: the
 * tenant's role has its new sessions start read-only
 * (`default_transaction_read_only`), and the sessions it had (writes under
 * way among them) are ended, so services reconnect read-only. Reads go on,
 * but those under way as the sessions end fail (UNAVAILABLE); writes fail
 * with SQLSTATE 25006, which services answer UNAVAILABLE (retry). Not a
 * lease: a Platform that stops while it holds one leaves the tenant
 * read-only until the move is resumed or rolled back. A move under freeze
 * adds it to the services' freeze, which could end (its time to live) or
 * miss an instance cut off from the change feed during a long copy.
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
