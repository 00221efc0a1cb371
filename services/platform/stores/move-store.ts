import { Code, ConnectError } from "@connectrpc/connect";
import { UniqueConstraintViolationException, type EntityManager } from "@mikro-orm/postgresql";
import { MoveMode, MoveState } from "../../../gen/tenantry/platform/v1/move_pb.js";
import { checkUuid } from "../../mesh/index.ts";
import { Move } from "../entities/move.ts";
import { Tenant } from "../entities/tenant.ts";
import { pageNewestFirst } from "./newest-first.ts";
import { placementNames, registrySpelling } from "./tenant-store.ts";

const modeSpelling = registrySpelling<MoveMode>(MoveMode);
const stateSpelling = registrySpelling<MoveState>(MoveState);

/** The mode the registry spells `name`. */
export const moveModeOf = modeSpelling.of;
/** The state the registry spells `name`. */
export const moveStateOf = stateSpelling.of;

/** Each mode a move runs in, as the registry spells it. */
export const moveModes = {
  online: modeSpelling.name(MoveMode.ONLINE),
  copyUnderFreeze: modeSpelling.name(MoveMode.COPY_UNDER_FREEZE),
} as const;

export type MoveModeName = (typeof moveModes)[keyof typeof moveModes];

/** Each state of a move as the registry spells it. */
export const moveStates = {
  running: stateSpelling.name(MoveState.RUNNING),
  succeeded: stateSpelling.name(MoveState.SUCCEEDED),
  failed: stateSpelling.name(MoveState.FAILED),
};

/** A new move's record, RUNNING from its first step. */
export type NewMoveRecord = Pick<Move, "id" | "tenantId" | "mode" | "step" | "sourceCluster" | "sourceDatabase" | "targetCluster" | "targetDatabase" | "compareDigests"> &
  Partial<Pick<Move, "sourcePlacement" | "targetPlacement" | "sourceSchemaPrefix" | "targetSchemaPrefix" | "targetRolePassword">>;

/** Records a move being started; FAILED_PRECONDITION when one of the tenant is running already. */
export async function insertMove(em: EntityManager, record: NewMoveRecord): Promise<Move> {
  const move = em.create(Move, { sourcePlacement: "dedicated", targetPlacement: "dedicated", sourceSchemaPrefix: "", targetSchemaPrefix: "", targetRolePassword: null, ...record, state: moveStates.running, error: null, targetRoleExisted: null, backupId: null, tablesCopied: 0, tableCount: 0, sourceDropped: false, createdAt: new Date() });
  try {
    await em.flush();
  } catch (error) {
    if (error instanceof UniqueConstraintViolationException) {
      throw new ConnectError(`a move of tenant "${record.tenantId}" is under way; wait for it to end (ListMoves)`, Code.FailedPrecondition);
    }
    throw error;
  }
  return move;
}

/** What a move's record may be changed in, once read. */
export type MoveChange = Partial<Pick<Move, "state" | "step" | "error" | "targetRoleExisted" | "backupId" | "tablesCopied" | "tableCount" | "freezeMs" | "switchedAt" | "finishedAt" | "keepUntil" | "sourceDropped">>;

/** Changes a move read through `em`. */
export async function changeMove(em: EntityManager, move: Move, change: MoveChange): Promise<void> {
  Object.assign(move, change);
  await em.flush();
}

/**
 * Routes the tenant to the move's target (in its target placement, with
 * the target's schema prefix and login) and records the move's `step` as
 * done, in one transaction: a Platform that stops around the switch finds
 * both or neither. The change feed announces the tenant's new route.
 */
export async function recordSwitch(em: EntityManager, move: Move, record: { step: string; switchedAt: Date; freezeMs: number }): Promise<void> {
  await em.transactional(async (tx) => {
    const placement =
      move.targetPlacement === move.sourcePlacement
        ? {}
        : { placement: move.targetPlacement, schemaPrefix: move.targetSchemaPrefix, rolePassword: move.targetPlacement === "pooled" ? null : move.targetRolePassword };
    await tx.nativeUpdate(Tenant, { id: move.tenantId }, { cluster: move.targetCluster, database: move.targetDatabase, ...placement, updatedAt: record.switchedAt });
    await tx.nativeUpdate(Move, { id: move.id }, record);
  });
  Object.assign(move, record);
}

/** Records a move's copy progress by id (no read needed: it is recorded often, beside the step). */
export async function recordMoveProgress(em: EntityManager, id: string, progress: Pick<Move, "tablesCopied" | "tableCount">): Promise<void> {
  await em.nativeUpdate(Move, { id }, progress);
}

/** A move, or null. */
export function findMove(em: EntityManager, id: string): Promise<Move | null> {
  return em.findOne(Move, { id });
}

/**
 * Whether this registry knows database `database` on cluster `cluster`: a
 * tenant's, a move's source or target, or a pool database. Another
 * registry's Platform may share the server; what it made is not ours.
 */
export async function isRegisteredDatabase(em: EntityManager, cluster: string, database: string): Promise<boolean> {
  const [row] = await em.execute<{ known: boolean }[]>(
    `select exists (select 1 from platform.tenants where cluster = ? and database = ?)
         or exists (select 1 from platform.moves where (source_cluster = ? and source_database = ?) or (target_cluster = ? and target_database = ?))
         or exists (select 1 from platform.pool_databases where cluster = ? and name = ?) as known`,
    [cluster, database, cluster, database, cluster, database, cluster, database],
  );
  return row?.known === true;
}

/** A move; NOT_FOUND when there is none by that id, INVALID_ARGUMENT for an id that is not a UUID. */
export async function getMove(em: EntityManager, moveId: string): Promise<Move> {
  const id = checkUuid(moveId, "move_id");
  const move = await findMove(em, id);
  if (move === null) {
    throw new ConnectError(`move "${id}" not found`, Code.NotFound);
  }
  return move;
}

/** The tenant's move under way, or null. */
export function findRunningMove(em: EntityManager, tenantId: string): Promise<Move | null> {
  return em.findOne(Move, { tenantId, state: moveStates.running });
}

/** The tenants being moved now (a move under way each): few, read in one statement without loading the moves. */
export async function movingTenantIds(em: EntityManager): Promise<Set<string>> {
  const rows = await em.execute<{ tenant_id: string }[]>("select tenant_id from platform.moves where state = ?", [moveStates.running]);
  return new Set(rows.map((row) => row.tenant_id));
}

/** FAILED_PRECONDITION while a move of the tenant is under way: a restore or offboarding would switch or drop the database it copies. */
export async function refuseWhileMoving(em: EntityManager, tenantId: string): Promise<void> {
  const moving = await findRunningMove(em, tenantId);
  if (moving !== null) {
    throw new ConnectError(`tenant "${tenantId}" is being moved (move "${moving.id}", after ${moving.step}); wait for the move to end, then try again`, Code.FailedPrecondition);
  }
}

/** The moves under way of these tenants, by tenant id. */
export async function runningMovesOf(em: EntityManager, tenantIds: string[]): Promise<Map<string, Move>> {
  if (tenantIds.length === 0) {
    return new Map();
  }
  const moves = await em.find(Move, { tenantId: { $in: tenantIds }, state: moveStates.running });
  return new Map(moves.map((move) => [move.tenantId, move]));
}

/**
 * How many moves to the cluster are under way, by the placement their
 * tenants take there (each takes its place once switched): `dedicated`
 * ones count against its capacity, `pooled` ones against its pool capacity.
 * A move between two pool databases of the cluster is not one: its tenant
 * holds its place there already.
 */
export async function countArrivingMoves(em: EntityManager, cluster: string): Promise<{ dedicated: number; pooled: number }> {
  const rows = await em.execute<{ placement: string; n: number }[]>(
    `select target_placement as placement, count(*)::int as n from platform.moves
     where target_cluster = ? and state = ? and not (source_cluster = target_cluster and source_placement = target_placement)
     group by target_placement`,
    [cluster, moveStates.running],
  );
  const pooled = rows.find((row) => row.placement === placementNames.pooled)?.n ?? 0;
  return { dedicated: rows.reduce((sum, row) => sum + row.n, 0) - pooled, pooled };
}

/** How many moves are under way, by mode. */
export async function countRunningMoves(em: EntityManager): Promise<Map<string, number>> {
  const rows = await em.execute<{ mode: string; n: number }[]>("select mode, count(*)::int as n from platform.moves where state = ? group by mode", [moveStates.running]);
  return new Map(rows.map((row) => [row.mode, row.n]));
}

/** Moves a Platform left under way, oldest first. */
export function findUnfinishedMoves(em: EntityManager): Promise<Move[]> {
  return em.find(Move, { state: moveStates.running }, { orderBy: { createdAt: "asc" } });
}

/** Succeeded moves whose source database is kept past its time and not dropped yet. */
export function findExpiredSources(em: EntityManager, now: Date): Promise<Move[]> {
  return em.find(Move, { state: moveStates.succeeded, sourceDropped: false, keepUntil: { $lt: now } });
}

/** Moves newest first, optionally of one tenant, one page at a time. */
export async function listMoves(em: EntityManager, request: { tenantId: string; pageSize: number; pageToken: string }): Promise<{ moves: Move[]; nextPageToken: string }> {
  const page = await pageNewestFirst(em, Move, request);
  return { moves: page.items, nextPageToken: page.nextPageToken };
}

/** The moves under way from or to the cluster, oldest first. */
export function findRunningMovesOf(em: EntityManager, cluster: string): Promise<Move[]> {
  return em.find(Move, { state: moveStates.running, $or: [{ sourceCluster: cluster }, { targetCluster: cluster }] }, { orderBy: { createdAt: "asc" } });
}
