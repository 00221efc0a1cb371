import { Code, ConnectError } from "@connectrpc/connect";
import type { EntityManager } from "@mikro-orm/postgresql";
import { TenantStatus, Tier } from "../../../gen/tenantry/platform/v1/platform_service_pb.js";
import { checkTenantId, isTenantId, pageOf, readPage } from "../../mesh/index.ts";
import { Tenant } from "../entities/tenant.ts";
import { writeRedoable } from "./redoable-writes.ts";

/**
 * How the registry spells the values of an API enum: the value's name
 * without prefix, lower-case; read back, a name it does not know is
 * UNSPECIFIED (0).
 */
export function registrySpelling<E extends number>(values: Record<number, string> & Record<string, string | number>): { name: (value: E) => string; of: (name: string) => E } {
  return {
    name: (value) => values[value]!.toLowerCase(),
    of: (name) => (values[name.toUpperCase()] ?? 0) as E,
  };
}

const statusSpelling = registrySpelling<TenantStatus>(TenantStatus);
const tierSpelling = registrySpelling<Tier>(Tier);

/** The registry's spelling of a status. */
export const statusName = statusSpelling.name;
/** The status the registry spells `name`; UNSPECIFIED for none. */
export const statusOf = statusSpelling.of;
/** The registry's spelling of a tier. */
export const tierName = tierSpelling.name;
/** The tier the registry spells `name`; UNSPECIFIED for none. */
export const tierOf = tierSpelling.of;

/** Each status as the registry spells it. */
export const statusNames = {
  provisioning: statusName(TenantStatus.PROVISIONING),
  active: statusName(TenantStatus.ACTIVE),
  suspended: statusName(TenantStatus.SUSPENDED),
  offboarding: statusName(TenantStatus.OFFBOARDING),
  deleted: statusName(TenantStatus.DELETED),
  failed: statusName(TenantStatus.FAILED),
};

/** The statuses of tenants whose schemas are kept current: fleet migrations take them, and count them. */
export const servedStatuses = [statusNames.active, statusNames.suspended];

/** The statuses of tenants that take up no place on their cluster. */
const placelessStatuses = [statusNames.deleted, statusNames.failed];

/** The placements as recorded: a database of the tenant's own, or schemas of its own in a pool database. */
export const placementNames = { dedicated: "dedicated", pooled: "pooled" } as const;

/** The prefix of a pooled tenant's schema names: `t_<id, - as _>_`, one-to-one since ids hold no `_`, and needing no quotes. */
export function pooledSchemaPrefix(tenantId: string): string {
  return `t_${tenantId.replaceAll("-", "_")}_`;
}

/**
 * Refuses to `action` a pooled tenant, FAILED_PRECONDITION: moves work on
 * whole databases, and a pooled tenant's data is schemas in a shared one.
 */
export function refusePooled(tenant: Pick<Tenant, "id" | "placement">, action: string): void {
  if (tenant.placement === placementNames.pooled) {
    throw new ConnectError(`tenant "${tenant.id}" is pooled (its schemas are in a shared pool database): ${action} is not yet for pooled tenants`, Code.FailedPrecondition);
  }
}

/** The context a tenant's role password is sealed for. */
export function rolePasswordContext(tenantId: string): string {
  return `tenant:${tenantId}:role`;
}

/** The context a tenant owner's password is sealed for while provisioning. */
export function ownerPasswordContext(tenantId: string): string {
  return `tenant:${tenantId}:owner-password`;
}

/** A new tenant's record, made PROVISIONING at its first step. */
export interface NewTenantRecord {
  id: string;
  displayName: string;
  /** See {@link tierName}. */
  tier: string;
  database: string;
  cluster: string;
  role: string;
  /** Sealed for {@link rolePasswordContext}; null for a pooled tenant, whose role does not log in. */
  rolePassword: Tenant["rolePassword"];
  /** See {@link placementNames}. */
  placement: string;
  /** Its schemas' prefix; empty for a dedicated tenant. */
  schemaPrefix: string;
  ownerEmail: string | null;
  /** Sealed for {@link ownerPasswordContext}. */
  ownerPassword: Tenant["ownerPassword"];
  /** The step recorded as done with the record. */
  lifecycleStep: string;
}

/** What a tenant's record may be changed in, once read. */
export type TenantChange = Partial<Pick<Tenant, "displayName" | "tier" | "status" | "lifecycleStep" | "error" | "rolePassword" | "ownerPassword" | "finalBackupId" | "cluster" | "database" | "schemaPrefix" | "suspendedReason">>;

/**
 * The step recorded on a PROVISIONING tenant that a restore is making (a
 * clone): its progress is the restore's, and provisioning leaves it alone.
 */
export const restoringStep = "restore";

/** A tenant, or null when there is none by that id. */
export function findTenant(em: EntityManager, tenantId: string): Promise<Tenant | null> {
  return em.findOne(Tenant, { id: tenantId });
}

/** The tenants of these ids that exist, in no particular order. */
export function findTenants(em: EntityManager, tenantIds: string[]): Promise<Tenant[]> {
  return tenantIds.length === 0 ? Promise.resolve([]) : em.find(Tenant, { id: { $in: tenantIds } });
}

/** A tenant; NOT_FOUND when there is none by that id, INVALID_ARGUMENT for a malformed one. */
export async function getTenant(em: EntityManager, tenantId: string): Promise<Tenant> {
  const id = checkTenantId(tenantId);
  const tenant = await findTenant(em, id);
  if (tenant === null) {
    throw new ConnectError(`tenant "${id}" not found`, Code.NotFound);
  }
  return tenant;
}

/** Tenants ordered by id, one page at a time. */
export async function listTenants(em: EntityManager, request: { pageSize: number; pageToken: string }): Promise<{ tenants: Tenant[]; nextPageToken: string }> {
  // A page ends at a tenant id.
  const { size, after } = readPage(request, (value): value is string => typeof value === "string" && isTenantId(value));
  const rows = await em.find(Tenant, after === undefined ? {} : { id: { $gt: after } }, { orderBy: { id: "asc" }, limit: size + 1 });
  const page = pageOf(rows, size, (last) => last.id);
  return { tenants: page.items, nextPageToken: page.nextPageToken };
}

/** The tenants still PROVISIONING, oldest first. */
export function findProvisioningTenants(em: EntityManager): Promise<Tenant[]> {
  return em.find(Tenant, { status: statusNames.provisioning, $or: [{ lifecycleStep: null }, { lifecycleStep: { $ne: restoringStep } }] }, { orderBy: { createdAt: "asc" } });
}

/** The tenants OFFBOARDING, the first to be purged first. */
export function findOffboardingTenants(em: EntityManager): Promise<Tenant[]> {
  return em.find(Tenant, { status: statusNames.offboarding }, { orderBy: { purgeAfter: "asc" } });
}

/** How many tenants have each status, by status name. */
export async function countTenantsByStatus(em: EntityManager): Promise<Map<string, number>> {
  const rows = await em.execute<{ status: string; n: number }[]>("select status, count(*)::int as n from platform.tenants group by status");
  return new Map(rows.map((row) => [row.status, row.n]));
}

/**
 * How many tenants of each placement take up a place on each cluster (all
 * but deleted and failed ones), by cluster name: as kept by the registry's
 * trigger on every change of a tenant (see migration 0017), not counted.
 */
export async function countTenantsByCluster(em: EntityManager): Promise<Map<string, { dedicated: number; pooled: number }>> {
  const rows = await em.execute<{ cluster: string; placement: string; n: string }[]>(
    "select cluster, placement, sum(tenants) as n from platform.placement_counts group by cluster, placement",
  );
  const counts = new Map<string, { dedicated: number; pooled: number }>();
  for (const row of rows) {
    const count = counts.get(row.cluster) ?? { dedicated: 0, pooled: 0 };
    count[row.placement === placementNames.pooled ? "pooled" : "dedicated"] += Number(row.n);
    counts.set(row.cluster, count);
  }
  return counts;
}

/** Records a new PROVISIONING tenant; a UniqueConstraintViolationException when the id (or its database or role) is taken. */
export async function insertTenant(em: EntityManager, record: NewTenantRecord): Promise<Tenant> {
  const now = new Date();
  const tenant = em.create(Tenant, { ...record, status: statusNames.provisioning, error: null, attempts: 1, createdAt: now, updatedAt: now });
  await em.flush();
  return tenant;
}

/** Changes a tenant read through `em`, and records when. */
export async function changeTenant(em: EntityManager, tenant: Tenant, change: TenantChange): Promise<void> {
  Object.assign(tenant, change, { updatedAt: new Date() });
  await em.flush();
}

/**
 * Records the step a tenant's provisioning has done, as a redoable write
 * (see {@link writeRedoable}): the step is done again should the record be
 * lost.
 */
export async function recordStepDone(em: EntityManager, tenant: Tenant, step: string): Promise<void> {
  await writeRedoable(em, async () => {
    Object.assign(tenant, { lifecycleStep: step, updatedAt: new Date() });
  });
}

/**
 * Changes a tenant's status from `from` to `to` (with `change`), unless it
 * is no longer `from`; returns whether it did.
 */
export async function changeStatus(em: EntityManager, tenantId: string, from: string, to: string, change: Partial<Pick<Tenant, "suspendedReason">> = {}): Promise<boolean> {
  return (await em.nativeUpdate(Tenant, { id: tenantId, status: from }, { ...change, status: to, updatedAt: new Date() })) > 0;
}

/** Makes a FAILED tenant PROVISIONING again from `step`, counting the attempt; returns whether it was FAILED. */
export async function restartProvisioning(em: EntityManager, tenantId: string, step: string): Promise<boolean> {
  const restarted = await em.execute<{ id: string }[]>(
    `update platform.tenants set status = ?, lifecycle_step = ?, error = null, attempts = attempts + 1, updated_at = now()
     where id = ? and status = ? returning id`,
    [statusNames.provisioning, step, tenantId, statusNames.failed],
  );
  return restarted.length > 0;
}

/** Makes an ACTIVE or SUSPENDED tenant OFFBOARDING from `step`, to be purged after `graceMs`. */
export async function startOffboarding(em: EntityManager, tenantId: string, step: string, graceMs: number): Promise<void> {
  await em.execute(
    "update platform.tenants set status = ?, lifecycle_step = ?, purge_after = now() + ? * interval '1 millisecond', updated_at = now() where id = ? and status in (?)",
    [statusNames.offboarding, step, graceMs, tenantId, servedStatuses],
  );
}

/** Forgets a tenant that was never served: a clone whose restore failed, with nothing of it left. */
export async function deleteUnservedTenant(em: EntityManager, tenantId: string): Promise<void> {
  await em.execute("delete from platform.tenants where id = ? and status = ?", [tenantId, statusNames.provisioning]);
}

/** Makes a FAILED tenant DELETED (it has nothing left to drop), forgetting its credentials; returns whether it was FAILED. */
export async function deleteFailedTenant(em: EntityManager, tenantId: string): Promise<boolean> {
  const deleted = await em.execute<{ id: string }[]>(
    "update platform.tenants set status = ?, lifecycle_step = null, owner_password = null, role_password = null, updated_at = now() where id = ? and status = ? returning id",
    [statusNames.deleted, tenantId, statusNames.failed],
  );
  return deleted.length > 0;
}

/** The tenants that take up a place on the cluster (all but deleted and failed ones), by id. */
export function findTenantsOnCluster(em: EntityManager, cluster: string): Promise<Tenant[]> {
  return em.find(Tenant, { cluster, status: { $nin: placelessStatuses } }, { orderBy: { id: "asc" } });
}
