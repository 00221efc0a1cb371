import { Code, ConnectError } from "@connectrpc/connect";
import type { EntityManager, MikroORM } from "@mikro-orm/postgresql";
import { randomBytes, randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { MoveMode } from "../../../gen/tenantry/platform/v1/move_pb.js";
import { Placement } from "../../../gen/tenantry/platform/v1/platform_service_pb.js";
import { checkTenantId, tenantDatabaseName } from "../../mesh/index.ts";
import { lockForTransaction, type AdvisoryLocks } from "../advisory-locks.ts";
import { platformActor, type AuditLog } from "../audit-log.ts";
import { answerOf, loginOf, reasonOf, refuseWhileRestoring, restoreLock } from "../backups/index.ts";
import type { Move } from "../entities/move.ts";
import { choosePoolDatabase } from "../provisioning/index.ts";
import { SingleFlight } from "../single-flight.ts";
import {
  auditOutcomes,
  changeMove,
  clusterStates,
  findExpiredSources,
  findMove,
  findRunningMove,
  findTenant,
  findUnfinishedMoves,
  getMove,
  getTenant,
  insertMove,
  isRegisteredDatabase,
  listClusters,
  listMoves,
  listPoolDatabases,
  moveModes,
  moveStates,
  statusNames,
  type MoveModeName,
  placementNames,
  pooledSchemaPrefix,
  poolStates,
  rolePasswordContext,
} from "../stores/index.ts";
import { readSchemaVersions } from "../tenant-databases.ts";
import { clusterRoom } from "./cluster-room.ts";
import { dropSlot, dropSubscription, moveIdOf, replicationPrefix } from "./logical-replication.ts";
import { moveRollback, moveSteps, moveStepTable, pointOfNoReturn, requested, rollingBack, type MoveContext, type MoveServices, type MoveStep } from "./move-steps.ts";
import { onlineMoveSupport, tablesWithoutReplicaIdentity } from "./online-move-support.ts";

/** The longest {@link TenantMoves.follow} waits before it looks at a move again. */
const followMaxWaitMs = 5000;

/** Options of {@link TenantMoves}. */
export interface TenantMovesOptions extends MoveServices {
  orm: MikroORM;
  locks: AdvisoryLocks;
  /** Every step, and every rollback, is recorded there. */
  audit: AuditLog;
  /** How many pooled tenants one pool database holds at most (a move into one chooses it as provisioning does); 1000 when unset. */
  poolMaxTenants?: number;
  /** The names of pool databases made for moves into one are this followed by `_<n>`; "tenantry_pool" when unset. */
  poolNamePrefix?: string;
  /** Called when a step's work is done, before it is recorded, and at points inside a step (for tests). */
  afterStep?: (moveId: string, step: string) => void | Promise<void>;
}

/** What a move asks for. */
export interface MoveRequest {
  tenantId: string;
  targetCluster: string;
  mode: MoveMode;
  compareDigests: boolean;
  /** The placement the tenant has once moved; unset or PLACEMENT_UNSPECIFIED keeps its own. */
  targetPlacement?: Placement;
  /** The pool database of the target cluster a tenant pooled there goes into; unset or empty lets the move choose one as provisioning does. */
  targetPoolDatabase?: string;
}

/**
 * Moves of tenants' databases to other clusters as resumable step machines
 * (see move-steps.ts). Each step's completion is recorded; a Platform that
 * stops anywhere goes on from the last step recorded when it starts
 * again, and a failure before the cutover drops what the move made.
 */
export class TenantMoves {
  readonly #options: TenantMovesOptions;
  readonly #running = new SingleFlight<Move>();
  readonly #stopping = new AbortController();

  constructor(options: TenantMovesOptions) {
    this.#options = options;
  }

  /**
   * Moves a tenant, resolving once it is served from the target. Refuses
   * (before anything is made) a tenant that is not ACTIVE or
   * is being moved or restored, a target that is the tenant's own cluster,
   * unknown, draining or full, and an online move where it is not possible.
   */
  async move(request: MoveRequest): Promise<Move> {
    return this.#run((await this.start(request)).id);
  }

  /**
   * Checks and records a move as {@link move} does, resolving with it once
   * it is recorded (RUNNING, after its first step) and before any work:
   * {@link follow} drives it on.
   */
  async start(request: MoveRequest): Promise<Move> {
    const { orm, clusters, box } = this.#options;
    const tenantId = checkTenantId(request.tenantId, "tenant_id");
    if (request.targetCluster === "") {
      throw new ConnectError("target_cluster is required", Code.InvalidArgument);
    }
    if (MoveMode[request.mode] === undefined) {
      throw new ConnectError(`unknown mode ${request.mode}: use MOVE_MODE_AUTO, MOVE_MODE_ONLINE or MOVE_MODE_COPY_UNDER_FREEZE`, Code.InvalidArgument);
    }
    const targetPlacement = request.targetPlacement ?? Placement.UNSPECIFIED;
    if (Placement[targetPlacement] === undefined) {
      throw new ConnectError(`unknown target_placement ${targetPlacement}: use PLACEMENT_DEDICATED or PLACEMENT_POOLED, or leave it unset to keep the tenant's`, Code.InvalidArgument);
    }
    const em = orm.em.fork();
    const tenant = await getTenant(em, tenantId);
    const pooled = tenant.placement === placementNames.pooled;
    if (tenant.status !== statusNames.active || tenant.cluster == null || tenant.role == null || (!pooled && tenant.rolePassword == null)) {
      throw new ConnectError(`tenant "${tenant.id}" is ${tenant.status}: only an ACTIVE tenant can be moved`, Code.FailedPrecondition);
    }
    const to = targetPlacement === Placement.UNSPECIFIED ? tenant.placement : targetPlacement === Placement.POOLED ? placementNames.pooled : placementNames.dedicated;
    const changesPlacement = to !== tenant.placement;
    const namedPool = request.targetPoolDatabase ?? "";
    if (namedPool !== "" && to !== placementNames.pooled) {
      throw new ConnectError(`target_pool_database names a pool database, and tenant "${tenant.id}" would have a database of its own: leave it empty, or ask for PLACEMENT_POOLED`, Code.InvalidArgument);
    }
    // To another pool database of its own cluster (one named): to rebalance pool databases, or to empty one.
    const betweenPools = pooled && !changesPlacement && request.targetCluster === tenant.cluster;
    if (betweenPools && namedPool === "") {
      throw new ConnectError(
        `tenant "${tenant.id}" is pooled on cluster "${tenant.cluster}" already: name the pool database to move it to (target_pool_database), or move it to another cluster, or to a database of its own (target_placement PLACEMENT_DEDICATED)`,
        Code.FailedPrecondition,
      );
    }
    if (betweenPools && namedPool === tenant.database) {
      throw new ConnectError(`tenant "${tenant.id}" is in pool database "${tenant.database}" of cluster "${tenant.cluster}" already`, Code.InvalidArgument);
    }
    if (!pooled && changesPlacement && request.mode === MoveMode.ONLINE) {
      throw new ConnectError(
        `tenant "${tenant.id}" goes into a pool database under freeze only (its schemas' names differ there); use MOVE_MODE_AUTO or MOVE_MODE_COPY_UNDER_FREEZE`,
        Code.FailedPrecondition,
      );
    }
    if (request.targetCluster === tenant.cluster && !changesPlacement && !betweenPools) {
      throw new ConnectError(`tenant "${tenant.id}" is on cluster "${tenant.cluster}" already`, Code.InvalidArgument);
    }
    // Between pools of one cluster the tenant keeps its place of the pool capacity.
    await this.#checkTarget(request.targetCluster, to === placementNames.pooled, !betweenPools);
    if (!changesPlacement && !betweenPools) {
      // Between placements the tenant's role may be one on both sides: the source is shut out through its pool's login (or the role's login for a pooled target), not the role.
      await this.#checkDistinctServers(tenant.cluster, request.targetCluster);
    }
    const running = await findRunningMove(em, tenant.id);
    if (running !== null) {
      throw new ConnectError(`a move of tenant "${tenant.id}" is under way (move ${running.id}, after ${running.step}); wait for it to end`, Code.FailedPrecondition);
    }
    const source = { cluster: tenant.cluster, database: tenant.database, login: pooled ? undefined : loginOf(box, tenant), schemaPrefix: tenant.schemaPrefix };
    if (pooled && request.mode === MoveMode.COPY_UNDER_FREEZE) {
      throw new ConnectError(
        `tenant "${tenant.id}" is pooled: it moves online only (under freeze its pool database could not refuse its writes alone: its sessions are the pool's login's, shared with its neighbours); use MOVE_MODE_AUTO or MOVE_MODE_ONLINE`,
        Code.FailedPrecondition,
      );
    }
    const demotes = !pooled && changesPlacement;
    const mode = demotes ? moveModes.copyUnderFreeze : await this.#chooseMode(pooled ? MoveMode.ONLINE : request.mode, source, request.targetCluster, pooled);
    const id = randomUUID();
    const record = async (tx: EntityManager, targetDatabase: string) => {
      // Restores, their undos and offboarding take the same lock to check for moves.
      await lockForTransaction(tx, restoreLock(tenant.id));
      await refuseWhileRestoring(tx, tenant.id);
      await insertMove(tx, {
        id,
        tenantId: tenant.id,
        mode,
        step: requested,
        sourceCluster: tenant.cluster!,
        sourceDatabase: tenant.database,
        targetCluster: request.targetCluster,
        targetDatabase,
        compareDigests: request.compareDigests,
        sourcePlacement: tenant.placement,
        targetPlacement: to,
        sourceSchemaPrefix: tenant.schemaPrefix,
        // Into a pool database the services' schemas need a prefix: the tenant's own if it has one.
        targetSchemaPrefix: demotes && tenant.schemaPrefix === "" ? pooledSchemaPrefix(tenant.id) : tenant.schemaPrefix,
        // A promotion gives the tenant's role a login of its own on the target.
        targetRolePassword: pooled && changesPlacement ? box.seal(randomBytes(24).toString("base64url"), rolePasswordContext(tenant.id)) : null,
      });
    };
    // Into a pool database (a demotion, or a pooled tenant to another pool): the one named, else chosen as provisioning
    // chooses one; the move recorded under the pool lock of the choice, so that it holds its place there from then on.
    const targetDatabase = to === placementNames.pooled
      ? namedPool === ""
        ? await choosePoolDatabase(em, clusters, box, request.targetCluster, this.#options, record)
        : await this.#checkPoolDatabase(em, request.targetCluster, namedPool, record)
      : await clusters.admin(request.targetCluster, async (admin) => {
          const name = tenantDatabaseName(tenant.id);
          const { rowCount } = await admin.query("select 1 from pg_database where datname = $1", [name]);
          // Taken by a database kept after an earlier move away from that cluster, say.
          return rowCount === 0 ? name : `${name}_m${id.slice(0, 8)}`;
        });
    if (to !== placementNames.pooled) {
      await em.transactional((tx) => record(tx, targetDatabase));
    }
    await this.#audit(id, tenant.id, requested, auditOutcomes.succeeded, { mode, sourceCluster: tenant.cluster, targetCluster: request.targetCluster, targetDatabase, sourcePlacement: tenant.placement, targetPlacement: to });
    return (await findMove(orm.em.fork(), id))!;
  }

  /**
   * Drives a move under way to its end, or joins the drive under way: in
   * this process, or (waiting, reading its record) in another Platform
   * instance; one that cannot go on for now (a cluster out of reach after
   * the switch) is tried again, less and less often. Resolves with the
   * move SUCCEEDED, or fails as the move did (FAILED_PRECONDITION once it
   * has been rolled back), or UNAVAILABLE when this Platform stops.
   */
  async follow(moveId: string): Promise<Move> {
    const { orm, pollMs } = this.#options;
    for (let wait = pollMs; ; wait = Math.min(wait * 2, followMaxWaitMs)) {
      try {
        const move = await this.#run(moveId);
        if (move.state === moveStates.failed) {
          throw failure(move);
        }
        return move;
      } catch (error) {
        const move = await findMove(orm.em.fork(), moveId);
        if (move?.state !== moveStates.running || this.#stopping.signal.aborted || ConnectError.from(error).code !== Code.Unavailable) {
          throw error;
        }
      }
      await sleep(wait, undefined, { signal: this.#stopping.signal }).catch(() => undefined);
    }
  }

  /** A move; NOT_FOUND, or INVALID_ARGUMENT for an id that is not a UUID. */
  get(moveId: string): Promise<Move> {
    return getMove(this.#options.orm.em.fork(), moveId);
  }

  /** Moves newest first, optionally of one tenant, one page at a time. */
  list(request: { tenantId: string; pageSize: number; pageToken: string }): Promise<{ moves: Move[]; nextPageToken: string }> {
    return listMoves(this.#options.orm.em.fork(), request);
  }

  /**
   * Goes on with the moves a stopped Platform left under way, drops the
   * source databases kept past their time, and removes replication slots
   * and subscriptions of moves that are no longer under way.
   */
  async sweep(): Promise<void> {
    const { orm, log } = this.#options;
    const em = orm.em.fork();
    for (const move of await findUnfinishedMoves(em)) {
      await this.#run(move.id).catch((error: unknown) =>
        log.warn({ moveId: move.id, tenantId: move.tenantId, reason: ConnectError.from(error).rawMessage }, "resumed move did not succeed"),
      );
    }
    for (const move of await findExpiredSources(em, new Date())) {
      await this.#dropSource(em, move).catch((error: unknown) => log.warn({ err: error, moveId: move.id }, "could not drop the database a move left; will retry"));
    }
    await this.#removeLeftovers();
  }

  /** Stops waiting: moves under way stop where they are (without rolling back) and go on when a Platform starts again. */
  stop(): void {
    this.#stopping.abort();
  }

  /**
   * FAILED_PRECONDITION, NOT_FOUND or RESOURCE_EXHAUSTED for a target that
   * cannot take the tenant: a pooled one takes a place of its pool
   * capacity, a dedicated one of its capacity.
   */
  async #checkTarget(name: string, pooled: boolean, takesPlace: boolean): Promise<void> {
    const em = this.#options.orm.em.fork();
    const target = (await listClusters(em)).find(({ cluster }) => cluster.name === name);
    if (target === undefined) {
      throw new ConnectError(`cluster "${name}" is not registered; see ListClusters`, Code.NotFound);
    }
    if (target.cluster.state !== clusterStates.accepting) {
      throw new ConnectError(`cluster "${name}" is ${target.cluster.state} and takes no tenants`, Code.FailedPrecondition);
    }
    if (!takesPlace) {
      return;
    }
    const room = await clusterRoom(em, target);
    if (pooled && room.pooled <= 0) {
      throw new ConnectError(
        `cluster "${name}" has no room for pooled tenants (pool capacity ${target.cluster.poolCapacity}, taken by pooled tenants there or moving there); raise its pool capacity or choose another`,
        Code.ResourceExhausted,
      );
    }
    if (!pooled && room.dedicated <= 0) {
      throw new ConnectError(
        `cluster "${name}" is full (capacity ${target.cluster.capacity}, taken by dedicated tenants there or moving there); raise its capacity or choose another`,
        Code.ResourceExhausted,
      );
    }
  }

  /**
   * The pool database `name` of `cluster`, named for a move into it, once
   * it can take one more tenant as provisioning's choice would (its tenants
   * and those moving in short of its capacity), `record` recording the move
   * under the lock pool choices take: NOT_FOUND when the cluster has none by
   * that name, FAILED_PRECONDITION when it is not ready (draining),
   * RESOURCE_EXHAUSTED when it is full.
   */
  async #checkPoolDatabase(em: EntityManager, cluster: string, name: string, record: (tx: EntityManager, name: string) => Promise<void>): Promise<string> {
    const max = this.#options.poolMaxTenants ?? 1000;
    await em.transactional(async (tx) => {
      // Under the lock pool choices and state changes take: a pool database set draining before is seen so.
      await lockForTransaction(tx, `pool:${cluster}`);
      const pool = (await listPoolDatabases(tx, cluster)).find((p) => p.name === name);
      if (pool === undefined) {
        throw new ConnectError(`cluster "${cluster}" has no pool database "${name}"; a pooled tenant's database (GetTenant) names one`, Code.NotFound);
      }
      if (pool.state !== poolStates.ready) {
        throw new ConnectError(`pool database "${name}" of cluster "${cluster}" is ${pool.state} and takes no tenants; name another, or leave target_pool_database empty`, Code.FailedPrecondition);
      }
      if (pool.tenantCount + pool.arriving >= max) {
        const held = `${pool.tenantCount} ${pool.tenantCount === 1 ? "tenant" : "tenants"}${pool.arriving === 0 ? "" : ` and ${pool.arriving} moving in`}`;
        throw new ConnectError(`pool database "${name}" of cluster "${cluster}" is full (${held}, at most ${max}); name another, or leave target_pool_database empty`, Code.ResourceExhausted);
      }
      await record(tx, name);
    });
    return name;
  }

  /**
   * FAILED_PRECONDITION when both clusters are the same PostgreSQL server
   * (registered twice): the tenant's role is one there, and a move would
   * shut the tenant out of both databases. Known by the server's system
   * identifier where the admin may read it, else by address.
   */
  async #checkDistinctServers(source: string, target: string): Promise<void> {
    const { clusters } = this.#options;
    if ((await clusters.serverIdentity(source)) === (await clusters.serverIdentity(target))) {
      throw new ConnectError(`clusters "${source}" and "${target}" are the same PostgreSQL server: a tenant cannot be moved between them`, Code.FailedPrecondition);
    }
  }


  /** The mode a move runs in: online where asked or possible, else copy under freeze. */
  async #chooseMode(
    asked: MoveMode,
    source: { cluster: string; database: string; login: { user: string; password: string } | undefined; schemaPrefix: string },
    target: string,
    pooled: boolean,
  ): Promise<MoveModeName> {
    if (asked === MoveMode.COPY_UNDER_FREEZE) {
      return moveModes.copyUnderFreeze;
    }
    const { clusters, schemas } = this.#options;
    const [from, to] = await Promise.all([onlineMoveSupport(clusters, source.cluster), onlineMoveSupport(clusters, target)]);
    const reasons = [
      ...(from.source ? [] : [`cluster "${source.cluster}" ${from.note}`]),
      ...(to.target ? [] : [`cluster "${target}" ${to.note}`]),
    ];
    if (from.source && to.target) {
      // A pooled source is read by the admin: its login is its pool's, which reads nothing of the tenant's by itself.
      const client = await clusters.connect(source.cluster, source.database, source.login);
      try {
        const versions = await readSchemaVersions(client, schemas.entries.map((e) => e.name), source.schemaPrefix);
        const keyless = await tablesWithoutReplicaIdentity(client, [...versions.keys()].map((service) => source.schemaPrefix + service));
        if (keyless.length > 0) {
          reasons.push(`table ${keyless.join(", ")} has no primary key, which logical replication needs to carry updates and deletes`);
        }
      } finally {
        await client.end().catch(() => undefined);
      }
    }
    if (reasons.length === 0) {
      return moveModes.online;
    }
    if (pooled) {
      throw new ConnectError(`a pooled tenant moves online only, and an online move is not possible: ${reasons.join("; ")}`, Code.FailedPrecondition);
    }
    if (asked === MoveMode.ONLINE) {
      throw new ConnectError(`an online move is not possible: ${reasons.join("; ")}; move under freeze instead (MOVE_MODE_COPY_UNDER_FREEZE)`, Code.FailedPrecondition);
    }
    this.#options.log.info({ reasons }, "moving under freeze: an online move is not possible");
    return moveModes.copyUnderFreeze;
  }

  /** Drives a move to its end, once per process, and once across Platform instances. */
  #run(moveId: string): Promise<Move> {
    return this.#running.run(moveId, async () => {
      const move = (await findMove(this.#options.orm.em.fork(), moveId))!;
      const key = `tenant:${move.tenantId}`;
      if (!(await this.#options.locks.tryLock(key))) {
        throw new ConnectError(`tenant "${move.tenantId}" is being worked on by another Platform instance; retry shortly`, Code.Unavailable);
      }
      try {
        return await this.#advance(moveId);
      } finally {
        await this.#options.locks.unlock(key).catch(() => undefined);
      }
    });
  }

  /** Performs the steps after the last one recorded; on a failure before the cutover, rolls back. */
  async #advance(moveId: string): Promise<Move> {
    const { orm, afterStep, log } = this.#options;
    const em = orm.em.fork();
    const move = (await findMove(em, moveId))!;
    if (move.state !== moveStates.running) {
      return move;
    }
    const tenant = await getTenant(em, move.tenantId);
    const context: MoveContext = {
      ...this.#options,
      em,
      move,
      tenant,
      reached: async (point) => afterStep?.(moveId, point),
      signal: this.#stopping.signal,
    };
    if (move.step === rollingBack) {
      await this.#rollback(context, move.error ?? "a Platform stopped while rolling it back");
      throw failure(move);
    }
    const steps: readonly MoveStep[] = moveSteps[move.mode as MoveModeName];
    const switched = () => steps.indexOf(move.step as MoveStep) >= steps.indexOf(pointOfNoReturn);
    for (const step of steps.slice(steps.indexOf(move.step as MoveStep) + 1)) {
      try {
        await moveStepTable[step](context);
      } catch (error) {
        log.warn({ err: error, moveId, tenantId: move.tenantId, step }, "move step failed");
        const cause = answerOf(error);
        if (switched()) {
          // The tenant is served from the target: go forward, later if not now.
          throw new ConnectError(`move "${move.id}" has switched the tenant but is not finished (${step}): ${cause.rawMessage}; Platform retries it`, Code.Unavailable);
        }
        if (this.#stopping.signal.aborted) {
          throw new ConnectError(`Platform stopped during move "${move.id}" (${step}); it goes on when Platform starts again`, Code.Unavailable);
        }
        await this.#audit(move.id, move.tenantId, step, auditOutcomes.failed, { error: cause.rawMessage });
        await this.#rollback(context, reasonOf(error));
        throw new ConnectError(failure(move).rawMessage, cause.code === Code.Unknown ? Code.Internal : cause.code);
      }
      await afterStep?.(moveId, step);
      await changeMove(em, move, { step });
      await this.#audit(move.id, move.tenantId, step, auditOutcomes.succeeded, {});
    }
    const finishedAt = new Date();
    await changeMove(em, move, { state: moveStates.succeeded, finishedAt, keepUntil: new Date(finishedAt.getTime() + this.#options.keepMs) });
    log.info({ moveId, tenantId: move.tenantId, mode: move.mode, cluster: move.targetCluster, freezeMs: move.freezeMs }, "tenant moved");
    return move;
  }

  /** Undoes what a failed move made, and leaves it FAILED. */
  async #rollback(context: MoveContext, reason: string): Promise<void> {
    const { em, move } = context;
    await changeMove(em, move, { step: rollingBack, error: reason });
    for (const work of moveRollback) {
      await work(context);
    }
    await changeMove(em, move, { state: moveStates.failed, finishedAt: new Date() });
    await this.#audit(move.id, move.tenantId, rollingBack, auditOutcomes.succeeded, { error: reason });
    this.#options.log.warn({ moveId: move.id, tenantId: move.tenantId, reason }, "move failed and was rolled back");
  }

  /** Drops a moved tenant's source database, and its role there unless the tenant has come back to that cluster since. */
  async #dropSource(em: EntityManager, move: Move): Promise<void> {
    const { clusters, log } = this.#options;
    if (move.sourcePlacement === placementNames.pooled) {
      // A pool database is shared: the tenant's schemas there went at close-source.
      await changeMove(em, move, { sourceDropped: true });
      return;
    }
    await clusters.dropDatabase(move.sourceCluster, move.sourceDatabase);
    const tenant = await findTenant(em, move.tenantId);
    if (tenant?.role != null && tenant.cluster !== move.sourceCluster) {
      await clusters.dropRole(move.sourceCluster, tenant.role).catch((error: { code?: string }) => {
        // 2BP01: it still owns something there (another database kept after a move), dropped later.
        if (error.code !== "2BP01") {
          throw error;
        }
      });
    }
    await changeMove(em, move, { sourceDropped: true });
    log.info({ moveId: move.id, tenantId: move.tenantId, cluster: move.sourceCluster, database: move.sourceDatabase }, "source database kept after a move dropped");
  }

  /**
   * Removes the replication slots and subscriptions named after moves that
   * are not under way (a Platform stopped between making one and recording
   * it, or while removing it), on every cluster it can reach, in databases
   * this registry knows: another Platform sharing a server (its own
   * registry) keeps its moves' slots.
   */
  async #removeLeftovers(): Promise<void> {
    const { orm, clusters, log } = this.#options;
    const em = orm.em.fork();
    const pattern = `${replicationPrefix}%`;
    for (const { cluster } of await listClusters(em)) {
      try {
        const { slots, subscriptions } = await clusters.admin(cluster.name, async (admin) => ({
          slots: (await admin.query<{ name: string; database: string }>("select slot_name as name, database from pg_replication_slots where slot_name like $1", [pattern])).rows,
          subscriptions: (
            await admin.query<{ name: string; database: string }>("select s.subname as name, d.datname as database from pg_subscription s join pg_database d on d.oid = s.subdbid where s.subname like $1", [pattern])
          ).rows,
        }));
        for (const { name, database } of subscriptions) {
          if ((await this.#leftOver(name)) && (await isRegisteredDatabase(em, cluster.name, database))) {
            await clusters.inDatabase(cluster.name, database, (client) => dropSubscription(client, name));
            log.warn({ cluster: cluster.name, subscription: name }, "removed a subscription a move left");
          }
        }
        for (const { name, database } of slots) {
          if ((await this.#leftOver(name)) && (await isRegisteredDatabase(em, cluster.name, database))) {
            await clusters.admin(cluster.name, (admin) => dropSlot(admin, name));
            log.warn({ cluster: cluster.name, slot: name }, "removed a replication slot a move left");
          }
        }
      } catch (error) {
        log.warn({ err: error, cluster: cluster.name }, "could not look for what moves left on a cluster; will retry");
      }
    }
  }

  /** Whether what is named `name` belongs to no move under way. */
  async #leftOver(name: string): Promise<boolean> {
    const moveId = moveIdOf(name);
    if (moveId === undefined) {
      return false;
    }
    const move = await findMove(this.#options.orm.em.fork(), moveId);
    return move === null || move.state !== moveStates.running;
  }

  #audit(moveId: string, tenantId: string, step: string, outcome: (typeof auditOutcomes)[keyof typeof auditOutcomes], detail: Record<string, unknown>): Promise<void> {
    return this.#options.audit.record({ actor: platformActor, action: step === rollingBack ? "RollBackMove" : "MoveStep", tenantId, outcome, detail: { moveId, step, ...detail } });
  }
}

function failure(move: Move): ConnectError {
  return new ConnectError(`move "${move.id}" of tenant "${move.tenantId}" to cluster "${move.targetCluster}" failed and was rolled back: ${move.error ?? "unknown reason"}`, Code.FailedPrecondition);
}
