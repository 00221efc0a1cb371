import type { EntityManager } from "@mikro-orm/postgresql";
import pg from "pg";
import type { ClusterRegistry } from "../cluster-registry.ts";
import type { Tenant } from "../entities/tenant.ts";
import { versionsOf, type TenantChange } from "../stores/index.ts";
import { exportTenant } from "./tenant-export.ts";

/**
 * The steps of offboarding a tenant, in order. Each is idempotent, and the
 * last one done is recorded on the tenant, so that a Platform that stops
 * anywhere goes on from there.
 */
export const offboardingSteps = ["requested", "export", "revoke-login", "drop-database", "drop-role"] as const;

export type OffboardingStep = (typeof offboardingSteps)[number];

/** What a step works on and with. */
export interface OffboardingContext {
  /** The EntityManager `tenant` was read through. */
  em: EntityManager;
  tenant: Tenant;
  clusters: ClusterRegistry;
  /** The service schemas exported. */
  schemas: string[];
  /** Where export files are written. */
  exportDir: string;
}

/** A step of offboarding: its work, which returns what to record on the tenant with it. */
export interface OffboardingStepDefinition {
  perform: (context: OffboardingContext) => Promise<TenantChange>;
  /** Whether the step waits for the tenant's grace period to end. */
  afterGrace: boolean;
}

/** Writes the export file of the tenant's service schemas, with the versions the ledger has for them. */
async function exportSchemas({ em, tenant, clusters, schemas, exportDir }: OffboardingContext): Promise<TenantChange> {
  const versions = await versionsOf(em, tenant.id);
  const exportPath = await clusters.inDatabase(tenant.cluster!, tenant.database, (client) =>
    exportTenant({ tenantId: tenant.id, client, schemas, versions, dir: exportDir }),
  );
  return { exportPath };
}

/** Takes the login from the tenant's role and ends its sessions. */
async function revokeLogin({ tenant, clusters }: OffboardingContext): Promise<TenantChange> {
  await clusters.admin(tenant.cluster!, async (admin) => {
    await admin.query(`alter role ${pg.escapeIdentifier(tenant.role!)} nologin`);
    await admin.query("select pg_terminate_backend(pid) from pg_stat_activity where datname = $1", [tenant.database]);
  });
  return {};
}

async function dropDatabase({ tenant, clusters }: OffboardingContext): Promise<TenantChange> {
  await clusters.dropDatabase(tenant.cluster!, tenant.database);
  return {};
}

async function dropRole({ tenant, clusters }: OffboardingContext): Promise<TenantChange> {
  await clusters.dropRole(tenant.cluster!, tenant.role!);
  return {};
}

/** What each offboarding step does. */
export const offboardingStepTable: { readonly [S in OffboardingStep]: OffboardingStepDefinition } = {
  // Recorded with the status (see TenantLifecycle.delete).
  requested: { perform: async () => ({}), afterGrace: false },
  export: { perform: exportSchemas, afterGrace: false },
  "revoke-login": { perform: revokeLogin, afterGrace: false },
  "drop-database": { perform: dropDatabase, afterGrace: true },
  "drop-role": { perform: dropRole, afterGrace: true },
};
