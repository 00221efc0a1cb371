import { Code, ConnectError } from "@connectrpc/connect";
import type { MikroORM } from "@mikro-orm/postgresql";
import { MoveMode } from "../../../gen/tenantry/platform/v1/move_pb.js";
import { DrainEvent } from "../../../gen/tenantry/platform/v1/move_service_pb.js";
import type { Logger } from "../../mesh/index.ts";
import type { Move } from "../entities/move.ts";
import type { ClusterRegistry } from "../cluster-registry.ts";
import type { Tenant } from "../entities/tenant.ts";
import { changeClusterState, clusterStates, findRunningMovesOf, findTenantsOnCluster, listClusters, placementNames, statusNames } from "../stores/index.ts";
import { clusterRoom } from "./cluster-room.ts";
import type { TenantMoves } from "./tenant-moves.ts";

export { DrainEvent };

/** Moves at once when a drain does not say. */
const defaultConcurrency = 2;
/** The most moves at once a drain may ask for. */
const maxConcurrency = 16;

/** What a drain asks for. */
export interface DrainRequest {
  /** The cluster to drain. */
  cluster: string;
  /** Moves at once; 0 means {@link defaultConcurrency}. */
  maxConcurrency: number;
  /** How each tenant moves; UNSPECIFIED means AUTO. */
  mode: MoveMode;
  /** Where every tenant goes; empty lets each move go where there is most room. */
  targetCluster: string;
}

/** The tenants of a drain, so far. */
export interface DrainTotals {
  total: number;
  moved: number;
  failed: number;
  left: number;
  remaining: number;
  moving: number;
}

/** One event of a drain, with the totals it leaves. */
export interface DrainProgress {
  event: DrainEvent;
  tenantId: string;
  moveId: string;
  targetCluster: string;
  error: string;
  totals: DrainTotals;
}

/** Options of {@link ClusterDrain}. */
export interface ClusterDrainOptions {
  orm: MikroORM;
  /** The moves a drain starts and follows. */
  moves: TenantMoves;
  /** Tells clusters on the drained cluster's own server, which cannot take its tenants. */
  clusters: ClusterRegistry;
  /** Told once a cluster is DRAINING: what is kept ready on it for new tenants can go. */
  onDraining?: (cluster: string) => void;
  log: Logger;
}

/** One piece of a drain's work: a move to follow, a tenant to move, or one that cannot move. */
type DrainTask = { kind: "follow"; move: Move; counted: boolean } | { kind: "move"; tenant: Tenant } | { kind: "leave"; tenant: Tenant };

/**
 * Drains of clusters: the cluster is recorded DRAINING, then every tenant
 * on it is moved away by {@link TenantMoves} (each move its own resumable
 * step machine), a bounded number at once. A drain keeps no record of its
 * own: run again, it finds the tenants still on the cluster and the moves
 * under way, and goes on from there.
 */
export class ClusterDrain {
  readonly #options: ClusterDrainOptions;

  constructor(options: ClusterDrainOptions) {
    this.#options = options;
  }

  /**
   * Drains a cluster, yielding an event as each move starts and ends, the
   * first once the cluster is DRAINING and the last with the final totals;
   * then fails FAILED_PRECONDITION if some tenants are still on it. Once
   * `signal` aborts, starts no more moves (those started go on) and ends.
   * Refuses, before anything is changed, a drain whose tenants have nowhere
   * to go.
   */
  async *drain(request: DrainRequest, signal: AbortSignal): AsyncGenerator<DrainProgress> {
    const { orm, moves, log } = this.#options;
    const concurrency = checkRequest(request);
    const mode = request.mode === MoveMode.UNSPECIFIED ? MoveMode.AUTO : request.mode;
    const em = orm.em.fork();
    const sameServer = await this.#sameServer(request.cluster);
    await this.#checkRoom(request, sameServer, await findTenantsOnCluster(em, request.cluster), await findRunningMovesOf(em, request.cluster));
    await changeClusterState(em, request.cluster, clusterStates.draining);
    this.#options.onDraining?.(request.cluster);
    log.info({ cluster: request.cluster, concurrency, mode: MoveMode[mode], target: request.targetCluster }, "draining cluster");

    const totals: DrainTotals = { total: 0, moved: 0, failed: 0, left: 0, remaining: 0, moving: 0 };
    const ready: DrainProgress[] = [];
    let wake: (() => void) | undefined;
    const emit = (event: DrainEvent, detail: Partial<DrainProgress> = {}) => {
      totals.remaining = totals.total - totals.moved - totals.failed - totals.left;
      ready.push({ event, tenantId: "", moveId: "", targetCluster: "", error: "", ...detail, totals: { ...totals } });
      wake?.();
    };
    const followed = new Set<string>();
    const counted = new Set<string>();

    /** The work not yet taken on: moves under way from or to the cluster, then the tenants on it without one. */
    const nextTasks = async (): Promise<DrainTask[]> => {
      const fresh = orm.em.fork();
      const running = await findRunningMovesOf(fresh, request.cluster);
      const tasks: DrainTask[] = [];
      for (const move of running.filter(({ id }) => !followed.has(id))) {
        followed.add(move.id);
        // A move to the cluster brings its tenant here: it is counted once found on the cluster.
        const away = move.sourceCluster === request.cluster && !counted.has(move.tenantId);
        if (away) {
          counted.add(move.tenantId);
          totals.total++;
        }
        tasks.push({ kind: "follow", move, counted: away });
      }
      const moving = new Set(running.map((move) => move.tenantId));
      for (const tenant of await findTenantsOnCluster(fresh, request.cluster)) {
        if (!counted.has(tenant.id) && !moving.has(tenant.id)) {
          counted.add(tenant.id);
          totals.total++;
          tasks.push(tenant.status === statusNames.active ? { kind: "move", tenant } : { kind: "leave", tenant });
        }
      }
      return tasks;
    };

    const follow = async (move: Move, away: boolean) => {
      totals.moving++;
      emit(DrainEvent.MOVE_FOLLOWED, { tenantId: move.tenantId, moveId: move.id, targetCluster: move.targetCluster });
      await this.#ended(moves.follow(move.id), move, away, totals, emit);
    };
    const moveAway = async (tenant: Tenant) => {
      let move: Move;
      try {
        // A pooled tenant keeps its placement (into a pool database of the target) and moves online only, whatever the drain's mode.
        const pooled = tenant.placement === placementNames.pooled;
        const targetCluster = request.targetCluster || (await this.#chooseTarget(request.cluster, sameServer, pooled));
        const tenantMode = pooled ? MoveMode.AUTO : mode;
        move = await moves.start({ tenantId: tenant.id, targetCluster, mode: tenantMode, compareDigests: false });
      } catch (error) {
        totals.failed++;
        emit(DrainEvent.MOVE_FAILED, { tenantId: tenant.id, error: ConnectError.from(error).rawMessage });
        return;
      }
      totals.moving++;
      emit(DrainEvent.MOVE_STARTED, { tenantId: tenant.id, moveId: move.id, targetCluster: move.targetCluster });
      await this.#ended(moves.follow(move.id), move, true, totals, emit);
    };
    const perform = (task: DrainTask): Promise<void> => {
      switch (task.kind) {
        case "follow":
          return follow(task.move, task.counted);
        case "move":
          return moveAway(task.tenant);
        case "leave":
          totals.left++;
          emit(DrainEvent.TENANT_LEFT, { tenantId: task.tenant.id, error: `tenant "${task.tenant.id}" is ${task.tenant.status}: only an ACTIVE tenant can be moved` });
          return Promise.resolve();
      }
    };

    let tasks = await nextTasks();
    emit(DrainEvent.STARTED);
    let finished = false;
    const work = (async () => {
      // Rounds: a move to the cluster that was under way may have brought another tenant to move.
      while (tasks.length > 0 && !signal.aborted) {
        await Promise.all(
          Array.from({ length: Math.min(concurrency, tasks.length) }, async () => {
            for (let task = tasks.shift(); task !== undefined && !signal.aborted; task = tasks.shift()) {
              await perform(task);
            }
          }),
        );
        if (!signal.aborted) {
          tasks = await nextTasks();
        }
      }
    })().finally(() => {
      finished = true;
      wake?.();
    });
    const aborted = () => wake?.();
    signal.addEventListener("abort", aborted);
    try {
      while (!signal.aborted && (!finished || ready.length > 0)) {
        const event = ready.shift();
        if (event !== undefined) {
          yield event;
          continue;
        }
        await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
      }
    } finally {
      signal.removeEventListener("abort", aborted);
      // Cancelled: the moves started go on by themselves, and log how they end.
      work.catch((error: unknown) => log.warn({ err: error, cluster: request.cluster }, "cluster drain stopped"));
    }
    if (signal.aborted) {
      log.info({ cluster: request.cluster, ...totals }, "cluster drain cancelled: the moves started go on, no more start");
      throw new ConnectError(`the drain of cluster "${request.cluster}" was cancelled; call DrainCluster again to go on`, Code.Canceled);
    }
    await work;
    emit(DrainEvent.FINISHED);
    yield ready.shift()!;
    log.info({ cluster: request.cluster, ...totals }, "cluster drain finished");
    const notMoved = totals.failed + totals.left;
    if (notMoved > 0) {
      throw new ConnectError(
        `${notMoved} of ${totals.total} tenants were not moved off cluster "${request.cluster}" (${totals.failed} failed, ${totals.left} left as not ACTIVE); see the events, then drain it again`,
        Code.FailedPrecondition,
      );
    }
  }

  /** Reports how a move followed ends; `away` counts it in the totals (a move to the cluster is not). */
  async #ended(result: Promise<Move>, move: Move, away: boolean, totals: DrainTotals, emit: (event: DrainEvent, detail: Partial<DrainProgress>) => void): Promise<void> {
    const event = { tenantId: move.tenantId, moveId: move.id, targetCluster: move.targetCluster };
    try {
      await result;
      totals.moving--;
      totals.moved += away ? 1 : 0;
      emit(DrainEvent.MOVE_SUCCEEDED, event);
    } catch (error) {
      totals.moving--;
      totals.failed += away ? 1 : 0;
      emit(DrainEvent.MOVE_FAILED, { ...event, error: ConnectError.from(error).rawMessage });
    }
  }

  /**
   * FAILED_PRECONDITION or RESOURCE_EXHAUSTED when the tenants to move have
   * nowhere to go; NOT_FOUND for an unknown cluster or target.
   */
  async #checkRoom(request: DrainRequest, sameServer: ReadonlySet<string>, tenants: Tenant[], running: Move[]): Promise<void> {
    const em = this.#options.orm.em.fork();
    const listed = await listClusters(em);
    if (!listed.some(({ cluster }) => cluster.name === request.cluster)) {
      throw new ConnectError(`cluster "${request.cluster}" is not registered; see ListClusters`, Code.NotFound);
    }
    let targets = listed.filter(({ cluster }) => cluster.name !== request.cluster && !sameServer.has(cluster.name) && cluster.state === clusterStates.accepting);
    if (request.targetCluster !== "") {
      const target = listed.find(({ cluster }) => cluster.name === request.targetCluster);
      if (target === undefined) {
        throw new ConnectError(`cluster "${request.targetCluster}" is not registered; see ListClusters`, Code.NotFound);
      }
      if (target.cluster.state !== clusterStates.accepting) {
        throw new ConnectError(`cluster "${request.targetCluster}" is ${target.cluster.state} and takes no tenants; choose another target`, Code.FailedPrecondition);
      }
      if (sameServer.has(request.targetCluster)) {
        throw new ConnectError(`clusters "${request.cluster}" and "${request.targetCluster}" are the same PostgreSQL server: choose a target on another server`, Code.FailedPrecondition);
      }
      targets = [target];
    }
    const moving = new Set(running.map((move) => move.tenantId));
    const toMove = tenants.filter((tenant) => tenant.status === statusNames.active && !moving.has(tenant.id));
    if (toMove.length === 0) {
      return;
    }
    if (targets.length === 0) {
      throw new ConnectError(
        `no other cluster accepts tenants, and ${toMove.length} tenants on cluster "${request.cluster}" must move: register one on another server, or set one accepting (RegisterCluster)`,
        Code.FailedPrecondition,
      );
    }
    // Each placement against its own capacity: pooled tenants take places of the targets' pool capacity only.
    const pooled = toMove.filter((tenant) => tenant.placement === placementNames.pooled).length;
    const dedicated = toMove.length - pooled;
    const room = { dedicated: 0, pooled: 0 };
    for (const target of targets) {
      const free = await clusterRoom(em, target);
      room.dedicated += Math.max(0, free.dedicated);
      room.pooled += Math.max(0, free.pooled);
    }
    const lacking = [
      ...(dedicated > room.dedicated ? [`${dedicated} dedicated tenants must move and their capacity has room for ${room.dedicated}`] : []),
      ...(pooled > room.pooled ? [`${pooled} pooled tenants must move and their pool capacity has room for ${room.pooled}`] : []),
    ];
    if (lacking.length > 0) {
      const raise = [...(dedicated > room.dedicated ? ["capacity"] : []), ...(pooled > room.pooled ? ["pool capacity"] : [])].join(" and ");
      throw new ConnectError(
        `the clusters that accept tenants have too little room for the tenants of cluster "${request.cluster}": ${lacking.join("; ")}; raise their ${raise} (RegisterCluster) or register another`,
        Code.ResourceExhausted,
      );
    }
  }

  /** The other clusters registered on the server of cluster `name` (a server may be registered twice under different names). */
  async #sameServer(name: string): Promise<Set<string>> {
    const { orm, clusters } = this.#options;
    const others = (await listClusters(orm.em.fork())).map(({ cluster }) => cluster.name).filter((other) => other !== name);
    if (others.length === 0) {
      return new Set();
    }
    const identity = await clusters.serverIdentity(name).catch(() => undefined);
    const same = new Set<string>();
    for (const other of others) {
      if (identity !== undefined && (await clusters.serverIdentity(other).catch(() => undefined)) === identity) {
        same.add(other);
      }
    }
    return same;
  }

  /**
   * The accepting cluster, other than `draining` and those on its server,
   * with the most room now for a tenant of this placement (a pooled one's
   * room is the pool capacity's), the first by name among equals;
   * RESOURCE_EXHAUSTED when none has room.
   */
  async #chooseTarget(draining: string, sameServer: ReadonlySet<string>, pooled: boolean): Promise<string> {
    const em = this.#options.orm.em.fork();
    let chosen: { name: string; room: number } | undefined;
    for (const listed of await listClusters(em)) {
      const { cluster } = listed;
      if (cluster.name === draining || sameServer.has(cluster.name) || cluster.state !== clusterStates.accepting) {
        continue;
      }
      const free = await clusterRoom(em, listed);
      const room = pooled ? free.pooled : free.dedicated;
      if (chosen === undefined || room > chosen.room) {
        chosen = { name: cluster.name, room };
      }
    }
    if (chosen === undefined || chosen.room <= 0) {
      const capacity = pooled ? "pool capacity (pooled tenants)" : "capacity";
      throw new ConnectError(`no cluster that accepts tenants has room for this one: raise a cluster's ${capacity} or register another`, Code.ResourceExhausted);
    }
    return chosen.name;
  }
}

/** The request's concurrency; INVALID_ARGUMENT for a malformed field. */
function checkRequest(request: DrainRequest): number {
  if (request.cluster === "") {
    throw new ConnectError("cluster is required", Code.InvalidArgument);
  }
  if (!Number.isInteger(request.maxConcurrency) || request.maxConcurrency < 0 || request.maxConcurrency > maxConcurrency) {
    throw new ConnectError(`max_concurrency ${request.maxConcurrency} is out of range: use 1 to ${maxConcurrency}, or 0 for ${defaultConcurrency}`, Code.InvalidArgument);
  }
  if (MoveMode[request.mode] === undefined) {
    throw new ConnectError(`unknown mode ${request.mode}: use MOVE_MODE_AUTO, MOVE_MODE_ONLINE or MOVE_MODE_COPY_UNDER_FREEZE`, Code.InvalidArgument);
  }
  if (request.targetCluster !== "" && request.targetCluster === request.cluster) {
    throw new ConnectError(`target_cluster is the cluster drained ("${request.cluster}"): choose another, or leave it empty`, Code.InvalidArgument);
  }
  return request.maxConcurrency || defaultConcurrency;
}
