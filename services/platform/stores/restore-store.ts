import type { EntityManager } from "@mikro-orm/postgresql";
import { RestoreKind, RestoreState } from "../../../gen/tenantry/platform/v1/backup_service_pb.js";
import { Restore } from "../entities/restore.ts";
import { placementNames, registrySpelling } from "./tenant-store.ts";

const kindSpelling = registrySpelling<RestoreKind>(RestoreKind);
const stateSpelling = registrySpelling<RestoreState>(RestoreState);

/** The kind the registry spells `name`; UNSPECIFIED for a drill, which the API does not show as a restore. */
export const restoreKindOf = kindSpelling.of;
/** The state the registry spells `name`. */
export const restoreStateOf = stateSpelling.of;

/** Each kind of restore as the registry spells it: the API's, and the verification drill. */
export const restoreKinds = {
  inPlace: kindSpelling.name(RestoreKind.IN_PLACE),
  clone: kindSpelling.name(RestoreKind.CLONE),
  verify: "verify",
} as const;

export type RestoreKindName = (typeof restoreKinds)[keyof typeof restoreKinds];

/** Each state of a restore as the registry spells it. */
export const restoreStates = {
  running: stateSpelling.name(RestoreState.RUNNING),
  succeeded: stateSpelling.name(RestoreState.SUCCEEDED),
  failed: stateSpelling.name(RestoreState.FAILED),
  undone: stateSpelling.name(RestoreState.UNDONE),
};

/** A new restore's record, RUNNING from its first step. */
export type NewRestoreRecord = Pick<Restore, "id" | "backupId" | "kind" | "tenantId" | "sourceTenantId" | "cluster" | "database" | "step"> &
  Partial<Pick<Restore, "previousDatabase" | "role" | "rolePassword" | "placement" | "schemaPrefix" | "previousSchemaPrefix">>;

/** Records a restore being started. */
export async function insertRestore(em: EntityManager, record: NewRestoreRecord): Promise<Restore> {
  const restore = em.create(Restore, { placement: "dedicated", schemaPrefix: "", previousSchemaPrefix: null, ...record, state: restoreStates.running, error: null, undoStep: null, previousDropped: false, createdAt: new Date() });
  await em.flush();
  return restore;
}

/** What a restore's record may be changed in, once read. */
export type RestoreChange = Partial<Pick<Restore, "database" | "state" | "step" | "undoStep" | "error" | "previousStatus" | "keepUntil" | "previousDropped" | "finishedAt">>;

/** Changes a restore read through `em`. */
export async function changeRestore(em: EntityManager, restore: Restore, change: RestoreChange): Promise<void> {
  Object.assign(restore, change);
  await em.flush();
}

/** A restore, or null. */
export function findRestore(em: EntityManager, id: string): Promise<Restore | null> {
  return em.findOne(Restore, { id });
}

/** Restores (and undos) a Platform left under way, oldest first. */
export function findUnfinishedRestores(em: EntityManager): Promise<Restore[]> {
  return em.find(Restore, { $or: [{ state: restoreStates.running }, { state: restoreStates.succeeded, undoStep: { $ne: null } }] }, { orderBy: { createdAt: "asc" } });
}

/** The tenant's newest in-place restore that succeeded, or null: the one UndoRestore undoes. */
export function findLastInPlaceRestore(em: EntityManager, tenantId: string): Promise<Restore | null> {
  return em.findOne(Restore, { tenantId, kind: restoreKinds.inPlace, state: { $in: [restoreStates.succeeded, restoreStates.undone] } }, { orderBy: { createdAt: "desc" } });
}

/** Whether a restore (or drill) of the backup is under way. */
export async function restoreUnderWay(em: EntityManager, where: { backupId: string }): Promise<boolean> {
  return (await em.count(Restore, { ...where, state: restoreStates.running })) > 0;
}

/**
 * The restore of the tenant under way, in place or as a clone, or the
 * in-place restore whose undo is: what must end before another restore or
 * undo of it starts. Null when there is none. (A drill touches no tenant.)
 */
export function findTenantRestoreUnderWay(em: EntityManager, tenantId: string): Promise<Restore | null> {
  return em.findOne(Restore, {
    tenantId,
    kind: { $in: [restoreKinds.inPlace, restoreKinds.clone] },
    $or: [{ state: restoreStates.running }, { state: restoreStates.succeeded, undoStep: { $ne: null } }],
  });
}

/** In-place restores whose replaced (or undone) database is kept past its time, and not dropped yet. */
export function findExpiredKeeps(em: EntityManager, now: Date): Promise<Restore[]> {
  return em.find(Restore, {
    kind: restoreKinds.inPlace,
    state: { $in: [restoreStates.succeeded, restoreStates.undone] },
    undoStep: null,
    previousDropped: false,
    keepUntil: { $lt: now },
  });
}

/**
 * Records as dropped the generations of a pooled tenant's schemas that its
 * in-place restores keep in a pool database, once the tenant's schemas
 * there are all dropped (it moved out of it): no undo switches back to
 * them, and no keep's end drops a generation of the same name made since.
 */
export async function forgetKeptGenerations(em: EntityManager, where: { tenantId: string; cluster: string; database: string }): Promise<void> {
  await em.nativeUpdate(
    Restore,
    { tenantId: where.tenantId, kind: restoreKinds.inPlace, placement: placementNames.pooled, cluster: where.cluster, database: where.database, previousDropped: false },
    { previousDropped: true },
  );
}
