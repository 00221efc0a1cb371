import type { EntityManager } from "@mikro-orm/postgresql";
import { randomUUID } from "node:crypto";
import pg from "pg";
import type { TenantBackups } from "../backups/index.ts";
import type { ClusterRegistry } from "../cluster-registry.ts";
import type { Tenant } from "../entities/tenant.ts";
import { dropPooledSchemas } from "../provisioning/index.ts";
import { backupStates, changeTenant, placementNames, type TenantChange } from "../stores/index.ts";

/**
 * The steps of offboarding a tenant, in order. Each is idempotent, and the
 * last one done is recorded on the tenant, so that a Platform that stops
 * anywhere goes on from there. ("export" takes the final backup; the name
 * is kept from when it wrote an export file, for offboardings under way.)
 */
export const offboardingSteps = ["requested", "export", "revoke-login", "drop-database", "drop-role"] as const;

export type OffboardingStep = (typeof offboardingSteps)[number];

/** The label of offboarding's final backup. */
export const finalBackupLabel = "final backup before offboarding";

/** What a step works on and with. */
export interface OffboardingContext {
  /** The EntityManager `tenant` was read through. */
  em: EntityManager;
  tenant: Tenant;
  clusters: ClusterRegistry;
  /** Takes the final backup. */
  backups: TenantBackups;
}

/** A step of offboarding: its work, which returns what to record on the tenant with it. */
export interface OffboardingStepDefinition {
  perform: (context: OffboardingContext) => Promise<TenantChange>;
  /** Whether the step waits for the tenant's grace period to end. */
  afterGrace: boolean;
}

/**
 * Takes the tenant's final backup, in the format of every backup (so it
 * restores as any other, as a new tenant once this one is gone). Its id is
 * recorded on the tenant before it is taken: a resumed offboarding keeps a
 * final backup that SUCCEEDED instead of taking another.
 */
async function takeFinalBackup({ em, tenant, backups }: OffboardingContext): Promise<TenantChange> {
  if (tenant.finalBackupId != null) {
    const taken = await backups.get(tenant.finalBackupId).catch(() => undefined);
    if (taken?.state === backupStates.succeeded) {
      return {};
    }
  }
  await changeTenant(em, tenant, { finalBackupId: randomUUID() });
  await backups.create(tenant.id, finalBackupLabel, { id: tenant.finalBackupId!, final: true });
  return {};
}

/**
 * Takes the login from the tenant's role and ends its sessions. A pooled
 * tenant's role has no login: it is taken from its pool database's login
 * instead (a lease then fails to take it on), and the pool's sessions that
 * serve the tenant (their application_name ends in `@<tenant id>`) end;
 * the other tenants' sessions are left alone.
 */
async function revokeLogin({ tenant, clusters }: OffboardingContext): Promise<TenantChange> {
  if (tenant.placement === placementNames.pooled) {
    await clusters.admin(tenant.cluster!, async (admin) => {
      const roles = await admin.query("select 1 from pg_roles where rolname = any($1)", [[tenant.database, tenant.role]]);
      if (roles.rowCount === 2) {
        await admin.query(`revoke ${pg.escapeIdentifier(tenant.role!)} from ${pg.escapeIdentifier(tenant.database)}`);
      }
      await admin.query("select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and application_name like $2", [tenant.database, `%@${tenant.id}`]);
    });
    return {};
  }
  await clusters.admin(tenant.cluster!, async (admin) => {
    await admin.query(`alter role ${pg.escapeIdentifier(tenant.role!)} nologin`);
    await admin.query("select pg_terminate_backend(pid) from pg_stat_activity where datname = $1", [tenant.database]);
  });
  return {};
}

/** Drops the tenant's database; a pooled tenant's schemas, never its pool database. */
async function dropDatabase({ tenant, clusters }: OffboardingContext): Promise<TenantChange> {
  if (tenant.placement === placementNames.pooled) {
    await dropPooledSchemas(clusters, tenant);
    return {};
  }
  await clusters.dropDatabase(tenant.cluster!, tenant.database);
  return {};
}

/**
 * Drops the tenant's role, and first the databases it still owns on its
 * cluster: those kept for a while after a move away from them (a tenant
 * moved into a pool database of its own cluster) or an in-place restore,
 * otherwise dropped at their time, which a tenant gone does not wait for.
 */
async function dropRole({ tenant, clusters }: OffboardingContext): Promise<TenantChange> {
  const { rows } = await clusters.admin(tenant.cluster!, (admin) =>
    admin.query<{ database: string }>("select datname as database from pg_database where datdba = (select oid from pg_roles where rolname = $1)", [tenant.role]),
  );
  for (const { database } of rows) {
    await clusters.dropDatabase(tenant.cluster!, database);
  }
  await clusters.dropRole(tenant.cluster!, tenant.role!);
  return {};
}

/** What each offboarding step does. */
export const offboardingStepTable: { readonly [S in OffboardingStep]: OffboardingStepDefinition } = {
  // Recorded with the status (see TenantLifecycle.delete).
  requested: { perform: async () => ({}), afterGrace: false },
  export: { perform: takeFinalBackup, afterGrace: false },
  "revoke-login": { perform: revokeLogin, afterGrace: false },
  "drop-database": { perform: dropDatabase, afterGrace: true },
  "drop-role": { perform: dropRole, afterGrace: true },
};
