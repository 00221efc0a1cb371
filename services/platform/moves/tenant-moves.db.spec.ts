import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { Migration } from "@mikro-orm/migrations";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BackupService } from "../../../gen/tenantry/platform/v1/backup_service_pb.js";
import { ClusterService, ClusterState } from "../../../gen/tenantry/platform/v1/cluster_service_pb.js";
import { FleetService, MigrationOutcome } from "../../../gen/tenantry/platform/v1/fleet_service_pb.js";
import { MoveMode, MovePlacement, MoveState } from "../../../gen/tenantry/platform/v1/move_pb.js";
import { MoveService } from "../../../gen/tenantry/platform/v1/move_service_pb.js";
import { Placement, TenantStatus, Tier } from "../../../gen/tenantry/platform/v1/platform_service_pb.js";
import { migrations as backendMigrations } from "../../backend/migrations/index.ts";
import { operatorCredentialInterceptor } from "../../mesh/index.ts";
import { failure } from "../../testing/failure.ts";
import { entryTitles } from "../../testing/entry-titles.ts";
import { retried } from "../../testing/retried.ts";
import { startSecondServer, type SecondServer } from "../../testing/second-server.ts";
import { startTestMesh, type TestMesh } from "../../testing/test-mesh.ts";

const owner = { email: "owner@example.com", password: "correct horse battery" };
const headers = (tenantId: string) => ({ headers: { "x-tenant-id": tenantId } });

/** A table with a sequence in Backend's schema, which no released migration makes: moves must carry its sequence. */
class AddTicketCounter extends Migration {
  override up(): void {
    // Unqualified, as service migrations are: it lands in the tenant's Backend schema, in either placement.
    this.addSql("create table tickets (number bigserial primary key, note text not null)");
  }
}
const migrationsWithSequence = [...backendMigrations, { name: "0002-add-ticket-counter", class: AddTicketCounter }];

/** Where moves wait (after the step named, until released) when a spec asks them to. */
let gate: { step: string; reached: PromiseWithResolvers<void>; release: PromiseWithResolvers<void> } | undefined;

/** Has the next move wait after `step` until released: `reached` resolves once it waits. */
function holdMovesAfter(step: string): { reached: Promise<void>; release: () => void } {
  const held = { step, reached: Promise.withResolvers<void>(), release: Promise.withResolvers<void>() };
  gate = held;
  return {
    reached: held.reached.promise,
    release: () => {
      gate = undefined;
      held.release.resolve();
    },
  };
}

/** Platform's hooks in this spec: moves wait at the gate. */
const hooks = {
  afterMoveStep: async (_moveId: string, step: string) => {
    const held = gate;
    if (held?.step === step) {
      held.reached.resolve();
      await held.release.promise;
    }
  },
};

let mesh: TestMesh;
let second: SecondServer;
let moves: Client<typeof MoveService>;
let backups: Client<typeof BackupService>;
let clusters: Client<typeof ClusterService>;

beforeAll(async () => {
  [mesh, second] = await Promise.all([startTestMesh({ services: ["auth", "backend"] }), startSecondServer()]);
  await mesh.restartBackend(migrationsWithSequence);
  await mesh.restartPlatform({}, hooks);
  const operator = [operatorCredentialInterceptor(mesh.operatorToken)];
  moves = mesh.client("platform", MoveService, operator);
  backups = mesh.client("platform", BackupService, operator);
  clusters = mesh.client("platform", ClusterService, operator);
  await clusters.registerCluster(second.registration("second"));
});
afterAll(async () => {
  await mesh?.stop();
  await second?.stop();
});

/** Runs SQL as the superuser in a database of the cluster named. */
function sqlOn<R extends Record<string, unknown>>(cluster: string, database: string, text: string, values?: unknown[]): Promise<R[]> {
  return (cluster === "default" ? mesh.sql<R>(database, text, values) : second.sql<R>(database, text, values));
}

/** A tenant with its owner, entries, and tickets numbered by their sequence. */
async function populatedTenant(prefix: string): Promise<{ tenantId: string; database: string }> {
  const tenant = await mesh.createTenant({ tenantId: mesh.uniqueTenantId(prefix), owner });
  for (const title of ["first", "second", "third"]) {
    await mesh.entries.createEntry({ title }, headers(tenant.tenantId));
  }
  await mesh.sql(tenant.database, "insert into backend.tickets (note) select 'before the move' from generate_series(1, 5)");
  return { tenantId: tenant.tenantId, database: tenant.database };
}

/** The tenant's entry titles as Backend serves them, every page. */
const titles = (tenantId: string) => entryTitles(mesh.entries, tenantId);

/** What moves leave on a server: replication slots, subscriptions and publications named after moves. */
async function replicationLeftovers(cluster: string): Promise<string[]> {
  const rows = await sqlOn<{ name: string }>(
    cluster,
    "postgres",
    "select slot_name as name from pg_replication_slots where slot_name like 'tenantry_move_%' union all select subname from pg_subscription where subname like 'tenantry_move_%'",
  );
  return rows.map((r) => r.name);
}

describe("clusters and online moves", () => {
  it("says of each cluster whether tenants can be moved from and to it online, and why not", async () => {
    await second.sql("postgres", "create role plain_admin login password 'plain-admin-password' createdb createrole");
    await clusters.registerCluster(second.registration("plain", { adminUser: "plain_admin", adminPassword: "plain-admin-password" }));
    const { clusters: listed } = await clusters.listClusters({});
    expect(listed.map((c) => [c.name, c.onlineMoveSource, c.onlineMoveTarget, c.onlineMoveNote])).toEqual([
      ["default", true, true, ""],
      ["plain", false, false, expect.stringMatching(/^not a source: the admin role "plain_admin" is not a superuser .*\. not a target: as above$/)],
      ["second", true, true, ""],
    ]);
    const { tenantId } = await populatedTenant("plain");
    const online = await failure(moves.moveTenant({ tenantId, targetCluster: "plain", mode: MoveMode.ONLINE }));
    expect([online.code, online.rawMessage]).toEqual([Code.FailedPrecondition, expect.stringMatching(/an online move is not possible: cluster "plain" not a source.*superuser/)]);
    expect((await moves.listMoves({ tenantId })).moves).toEqual([]);
    await clusters.registerCluster(second.registration("plain", { adminUser: "plain_admin", adminPassword: "plain-admin-password", state: ClusterState.DRAINING }));
  });
});

describe("a move under freeze", () => {
  it("copies the tenant to the other cluster, switches its route, and closes the source", async () => {
    const { tenantId, database } = await populatedTenant("freeze");
    const { move } = await moves.moveTenant({ tenantId, targetCluster: "second", mode: MoveMode.COPY_UNDER_FREEZE, compareDigests: true });
    expect(move).toMatchObject({ state: MoveState.SUCCEEDED, mode: MoveMode.COPY_UNDER_FREEZE, step: "close-source", sourceCluster: "default", targetCluster: "second", sourceDatabase: database });
    expect(move!.writeFreeze).toBeDefined();
    const tenant = (await mesh.platformClient.getTenant({ tenantId })).tenant!;
    expect([tenant.status, tenant.cluster, tenant.database, tenant.move]).toEqual([TenantStatus.ACTIVE, "second", move!.targetDatabase, undefined]);
    expect(await titles(tenantId)).toEqual(["first", "second", "third"]);
    await retried(() => mesh.entries.createEntry({ title: "after the move" }, headers(tenantId)));
    expect(await retried(() => mesh.login(tenantId, owner))).toMatch(/^ey/);
    expect(await sqlOn("default", "postgres", "select datallowconn from pg_database where datname = $1", [database])).toEqual([{ datallowconn: false }]);
    await second.sql(move!.targetDatabase, "insert into backend.tickets (note) values ('after the move')");
    expect(await second.sql(move!.targetDatabase, "select number::int from backend.tickets order by number")).toEqual([1, 2, 3, 4, 5, 6].map((number) => ({ number })));
  });
});

describe("an online move", () => {
  it("copies the tenant while it is served, switches its route, and leaves no replication behind", async () => {
    const { tenantId, database } = await populatedTenant("online");
    const { move } = await moves.moveTenant({ tenantId, targetCluster: "second", mode: MoveMode.ONLINE, compareDigests: true });
    expect(move).toMatchObject({ state: MoveState.SUCCEEDED, mode: MoveMode.ONLINE, step: "close-source", sourceDatabase: database, compareDigests: true });
    expect(move!.tableCount).toBeGreaterThan(0);
    expect(move!.tablesCopied).toBe(move!.tableCount);
    const tenant = (await mesh.platformClient.getTenant({ tenantId })).tenant!;
    expect([tenant.cluster, tenant.database]).toEqual(["second", move!.targetDatabase]);
    expect(await titles(tenantId)).toEqual(["first", "second", "third"]);
    expect(await retried(() => mesh.login(tenantId, owner))).toMatch(/^ey/);
    expect(await replicationLeftovers("default")).toEqual([]);
    expect(await replicationLeftovers("second")).toEqual([]);
    await second.sql(move!.targetDatabase, "insert into backend.tickets (note) values ('after the move')");
    expect(await second.sql(move!.targetDatabase, "select number::int from backend.tickets order by number")).toEqual([1, 2, 3, 4, 5, 6].map((number) => ({ number })));
    expect(await second.sql(move!.targetDatabase, "select to_regclass('public.tenantry_move_marker') as marker")).toEqual([{ marker: null }]);
  });
});

describe("moves refused", () => {
  it("refuses before making anything: an unknown, draining, full or own cluster (or its server under another name), a tenant not ACTIVE", async () => {
    const { tenantId } = await populatedTenant("refused");
    expect((await failure(moves.moveTenant({ tenantId, targetCluster: "nowhere" }))).code).toBe(Code.NotFound);
    expect((await failure(moves.moveTenant({ tenantId, targetCluster: "default" }))).code).toBe(Code.InvalidArgument);
    expect((await failure(moves.moveTenant({ tenantId, targetCluster: "" }))).code).toBe(Code.InvalidArgument);
    await clusters.registerCluster(second.registration("draining", { state: ClusterState.DRAINING }));
    expect((await failure(moves.moveTenant({ tenantId, targetCluster: "draining" }))).code).toBe(Code.FailedPrecondition);
    await clusters.registerCluster(second.registration("tiny", { capacity: 1 }));
    await mesh.platformClient.createTenant({ tenantId: mesh.uniqueTenantId("filler"), cluster: "tiny" });
    expect((await failure(moves.moveTenant({ tenantId, targetCluster: "tiny" }))).code).toBe(Code.ResourceExhausted);
    const shared = new URL(mesh.databaseUrl("postgres"));
    await clusters.registerCluster({ ...second.registration("alias"), port: Number(shared.port), adminPassword: decodeURIComponent(shared.password) });
    const alias = await failure(moves.moveTenant({ tenantId, targetCluster: "alias" }));
    expect([alias.code, alias.rawMessage]).toEqual([Code.FailedPrecondition, expect.stringMatching(/same PostgreSQL server/)]);
    await mesh.platformClient.suspendTenant({ tenantId });
    expect((await failure(moves.moveTenant({ tenantId, targetCluster: "second" }))).code).toBe(Code.FailedPrecondition);
    const { moves: made } = await moves.listMoves({ tenantId });
    expect(made).toEqual([]);
    expect(await second.sql("postgres", "select datname from pg_database where datname like $1", [`tenant\\_${tenantId.replaceAll("-", "\\_")}%`])).toEqual([]);
  });
});

/** Calls clients make against a tenant until stopped, and how each ended. */
interface Load {
  /** Titles of the writes acknowledged, each with the id of the entry made. */
  acknowledged: Map<string, string>;
  /** Attempts refused with a code that says to retry (UNAVAILABLE), by what was attempted. */
  retried: { writes: number; reads: number };
  /** Calls that failed with any other code, or still failed after their retries. */
  failed: string[];
  /** Reads that succeeded. */
  reads: number;
  stop(): Promise<void>;
}

/**
 * Writers creating entries (each with a request_id, retried with it on
 * UNAVAILABLE until answered) and readers listing and getting entries
 * (retried on UNAVAILABLE), until stopped.
 */
function startLoad(tenantId: string, options: { writers: number; readers: number }): Load {
  const load: Load = { acknowledged: new Map(), retried: { writes: 0, reads: 0 }, failed: [], reads: 0, stop: async () => {} };
  let stopping = false;
  const withRetries = async <T>(what: "writes" | "reads", call: () => Promise<T>): Promise<T | undefined> => {
    for (let attempt = 0; attempt < 200; attempt++) {
      try {
        return await call();
      } catch (error) {
        const cause = ConnectError.from(error);
        if (cause.code !== Code.Unavailable) {
          load.failed.push(`${what}: ${Code[cause.code]} ${cause.rawMessage}`);
          return undefined;
        }
        load.retried[what]++;
        await new Promise((resolve) => setTimeout(resolve, 20 + Math.random() * 30));
      }
    }
    load.failed.push(`${what}: still UNAVAILABLE after 200 attempts`);
    return undefined;
  };
  const writer = async (w: number) => {
    for (let n = 0; !stopping; n++) {
      const title = `w${w}-${n}`;
      const requestId = crypto.randomUUID();
      const created = await withRetries("writes", () => mesh.entries.createEntry({ title, requestId }, headers(tenantId)));
      if (created !== undefined) {
        load.acknowledged.set(title, created.entry!.id);
      }
    }
  };
  const reader = async () => {
    while (!stopping) {
      const listed = await withRetries("reads", () => mesh.entries.listEntries({ pageSize: 10 }, headers(tenantId)));
      const first = listed?.entries[0];
      if (first !== undefined && (await withRetries("reads", () => mesh.entries.getEntry({ id: first.id }, headers(tenantId)))) !== undefined) {
        load.reads++;
      }
    }
  };
  const running = Promise.all([...Array.from({ length: options.writers }, (_, w) => writer(w)), ...Array.from({ length: options.readers }, reader)]);
  load.stop = async () => {
    stopping = true;
    await running;
  };
  return load;
}

describe("an online move under reads and writes", () => {
  it("holds writes through the cutover, loses none and stores each once, fails no read, and keeps serving another tenant", async () => {
    const { tenantId } = await populatedTenant("load");
    const { tenantId: neighbour } = await populatedTenant("neighbour");
    const load = startLoad(tenantId, { writers: 4, readers: 2 });
    const neighbourLoad = startLoad(neighbour, { writers: 1, readers: 1 });
    let move: Awaited<ReturnType<typeof moves.moveTenant>>["move"];
    const fleet = mesh.client("platform", FleetService, [operatorCredentialInterceptor(mesh.operatorToken)]);
    let migrating: Promise<{ tenantId: string; service: string; outcome: MigrationOutcome }[]> | undefined;
    let migrated = false;
    try {
      const hold = holdMovesAfter("initial-copy");
      const moving = moves.moveTenant({ tenantId, targetCluster: "second", mode: MoveMode.ONLINE }, { timeoutMs: 120_000 });
      await hold.reached;
      try {
        // While it runs: one move at a time, and no restore or offboarding of it.
        const tenant = (await mesh.platformClient.getTenant({ tenantId })).tenant!;
        expect(tenant.move).toMatchObject({ state: MoveState.RUNNING, targetCluster: "second", mode: MoveMode.ONLINE, step: "subscribe" });
        const again = await failure(moves.moveTenant({ tenantId, targetCluster: "second" }));
        expect([again.code, again.rawMessage]).toEqual([Code.FailedPrecondition, expect.stringMatching(/under way/)]);
        expect((await failure(mesh.platformClient.deleteTenant({ tenantId }))).code).toBe(Code.FailedPrecondition);
        const metrics = (await (await fetch(`http://127.0.0.1:${mesh.platform.httpPort}/metrics`)).text()).split("\n");
        expect(metrics).toContain('tenantry_moves_running{mode="online"} 1');
        expect(metrics).toContain('tenantry_moves_slots{cluster="default"} 1');
        expect(Number(metrics.find((l) => l.startsWith('tenantry_moves_slot_age_max_seconds{cluster="default"}'))?.split(" ").at(-1))).toBeGreaterThan(0);
        const { backup } = await backups.createBackup({ tenantId });
        expect((await failure(backups.restoreBackup({ backupId: backup!.backupId }))).code).toBe(Code.FailedPrecondition);
        // A fleet migration that takes the tenant (behind on Backend, as the ledger says) migrates it once the move has ended.
        await mesh.sql(mesh.platformDatabase, "update platform.tenant_schema_versions set status = 'failed' where tenant_id = $1 and service = 'backend'", [tenantId]);
        migrating = (async () => {
          const events = [];
          for await (const event of fleet.migrateTenants({ tenantIds: [tenantId] }, { timeoutMs: 120_000 })) {
            events.push(event);
          }
          migrated = true;
          return events;
        })();
        await new Promise((resolve) => setTimeout(resolve, 1000));
        expect(migrated).toBe(false);
      } finally {
        hold.release();
      }

      ({ move } = await moving);
      const events = await migrating!;
      expect(events.filter((e) => e.service === "backend").map((e) => [e.tenantId, MigrationOutcome[e.outcome]])).toEqual([[tenantId, "ALREADY_CURRENT"]]);
      await new Promise((resolve) => setTimeout(resolve, 500));
    } finally {
      await Promise.all([load.stop(), neighbourLoad.stop()]);
    }
    expect(move).toMatchObject({ state: MoveState.SUCCEEDED, targetCluster: "second" });
    expect(load.failed).toEqual([]);
    // The services held the writes through the cutover, and tried again the reads the source turned away: none was refused.
    expect(load.retried).toEqual({ writes: 0, reads: 0 });
    expect(neighbourLoad.failed).toEqual([]);
    expect(neighbourLoad.retried).toEqual({ writes: 0, reads: 0 });
    expect(load.acknowledged.size).toBeGreaterThan(20);
    expect(load.reads).toBeGreaterThan(0);
    const stored = await second.sql<{ title: string; id: string; copies: number }>(
      move!.targetDatabase,
      "select title, min(id::text) as id, count(*)::int as copies from backend.entries group by title",
    );
    const byTitle = new Map(stored.map((row) => [row.title, row]));
    for (const [title, id] of load.acknowledged) {
      expect(byTitle.get(title), `acknowledged write ${title}`).toEqual({ title, id, copies: 1 });
    }
    expect(stored.filter((row) => row.copies !== 1)).toEqual([]);
    console.log(
      `online move under load: ${load.acknowledged.size} writes acknowledged, ${load.reads} reads; retried ${load.retried.writes} writes and ${load.retried.reads} reads on UNAVAILABLE; writes frozen ${Number(move!.writeFreeze!.seconds) * 1000 + move!.writeFreeze!.nanos / 1e6} ms`,
    );
  });
});

describe("a move that fails", () => {
  it("is rolled back before its switch: the tenant served and writable on its source, nothing left on the target", async () => {
    const { tenantId, database } = await populatedTenant("rollback");
    const hold = holdMovesAfter("catch-up");
    const moving = failure(moves.moveTenant({ tenantId, targetCluster: "second", mode: MoveMode.ONLINE }));
    await hold.reached;
    try {
      const { move: running } = await moves.getMove({ moveId: (await moves.listMoves({ tenantId })).moves[0]!.moveId });
      // A row only the target has: the cutover's comparison must refuse to switch.
      await second.sql(running!.targetDatabase, "insert into backend.entries (id, title) values (gen_random_uuid(), 'only on the target')");
    } finally {
      hold.release();
    }
    const error = await moving;
    expect([error.code, error.rawMessage]).toEqual([Code.FailedPrecondition, expect.stringMatching(/rolled back: table backend\.entries has 3 rows on the source and 4 on the target/)]);
    const { moves: [move] } = await moves.listMoves({ tenantId });
    expect(move).toMatchObject({ state: MoveState.FAILED, step: "rollback" });
    const tenant = (await mesh.platformClient.getTenant({ tenantId })).tenant!;
    expect([tenant.cluster, tenant.database, tenant.move]).toEqual(["default", database, undefined]);
    await retried(() => mesh.entries.createEntry({ title: "after the rollback" }, headers(tenantId)));
    expect(await titles(tenantId)).toEqual(["after the rollback", "first", "second", "third"]);
    expect(await second.sql("postgres", "select datname from pg_database where datname = $1 union all select rolname from pg_roles where rolname = $2", [move!.targetDatabase, database])).toEqual([]);
    expect(await replicationLeftovers("default")).toEqual([]);
    expect(await replicationLeftovers("second")).toEqual([]);
    expect(await mesh.sql(database, "select count(*)::int as n from pg_publication")).toEqual([{ n: 0 }]);
    const events = (await mesh.platformClient.listAuditEvents({ tenantId })).events.map((e) => e.action);
    expect(events).toContain("RollBackMove");
  });
});

describe("a moved tenant's source", () => {
  beforeAll(() => mesh.restartPlatform({ TENANTRY_MOVE_KEEP_MS: "0", TENANTRY_OFFBOARDING_CHECK_INTERVAL_MS: "200" }, hooks));
  afterAll(() => mesh.restartPlatform({}, hooks));

  it("is dropped once kept TENANTRY_MOVE_KEEP_MS, with the tenant's role on that cluster", async () => {
    const { tenantId, database } = await populatedTenant("dropped");
    const { move } = await moves.moveTenant({ tenantId, targetCluster: "second" });
    expect(move!.mode).toBe(MoveMode.ONLINE);
    const deadline = Date.now() + 20_000;
    while (!(await moves.getMove({ moveId: move!.moveId })).move!.sourceDropped && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect((await moves.getMove({ moveId: move!.moveId })).move!.sourceDropped).toBe(true);
    expect(await mesh.sql("postgres", "select datname from pg_database where datname = $1 union all select rolname from pg_roles where rolname = $1", [database])).toEqual([]);
    expect(await titles(tenantId)).toEqual(["first", "second", "third"]);
  });
});

/** A pooled tenant with its owner, entries and tickets, in a pool database of the default cluster. */
async function pooledTenant(prefix: string): Promise<{ tenantId: string; pool: string; schemaPrefix: string; role: string }> {
  const tenantId = mesh.uniqueTenantId(prefix);
  // On "default" by name: clusters registered by earlier tests (on the second server, or this one under another name) have more room for pooled tenants.
  const tenant = await mesh.createTenant({ tenantId, owner, placement: Placement.POOLED, cluster: "default" });
  const schemaPrefix = `t_${tenantId.replaceAll("-", "_")}_`;
  for (const title of ["first", "second", "third"]) {
    await mesh.entries.createEntry({ title }, headers(tenantId));
  }
  await mesh.sql(tenant!.database, `insert into ${schemaPrefix}backend.tickets (note) select 'before the move' from generate_series(1, 5)`);
  return { tenantId, pool: tenant!.database, schemaPrefix, role: `tenant_${tenantId.replaceAll("-", "_")}` };
}

/** The backends of a pool database last leased to a tenant, by pid. */
async function leasesOf(pool: string, tenantId: string): Promise<number[]> {
  const rows = await mesh.sql<{ pid: number }>(pool, "select pid from pg_stat_activity where datname = $1 and application_name like $2", [pool, `%@${tenantId}`]);
  return rows.map((r) => r.pid);
}

/**
 * Restarts Auth and Backend with `env`. Their connections idle for
 * TENANTRY_DB_IDLE_TIMEOUT_MS (10 s by default) close, and a slow run closes
 * so a pool neighbour's session idle since the neighbour was made (its
 * owner's, in Auth): no doing of a move. Where a spec watches the
 * neighbours' sessions, none closes for being idle.
 */
async function restartTenantServices(env: Record<string, string>): Promise<void> {
  await mesh.restartService("auth", { env });
  await mesh.restartService("backend", { env, overrides: { migrations: migrationsWithSequence } });
}

describe("moves between placements", () => {
  beforeAll(() => restartTenantServices({ TENANTRY_DB_IDLE_TIMEOUT_MS: String(60 * 60_000) }));
  afterAll(() => restartTenantServices({}));

  it("is promoted online on its own cluster under writes: none lost, its pool neighbours served throughout and their sessions untouched", async () => {
    const promoted = await pooledTenant("promoted");
    const neighbour = await pooledTenant("pool-neighbour");
    expect(neighbour.pool).toBe(promoted.pool);
    // Writers only: held by the freeze, they lease no pool session from it to the switch, so every session last leased to the neighbour when frozen is the neighbour's at the shut-out.
    const load = startLoad(promoted.tenantId, { writers: 3, readers: 0 });
    const neighbourLoad = startLoad(neighbour.tenantId, { writers: 1, readers: 1 });
    let move: Awaited<ReturnType<typeof moves.moveTenant>>["move"];
    let neighbourSessions: number[] = [];
    try {
      const hold = holdMovesAfter("cutover:frozen");
      const moving = moves.moveTenant({ tenantId: promoted.tenantId, targetCluster: "default", targetPlacement: Placement.DEDICATED }, { timeoutMs: 120_000 });
      await hold.reached;
      try {
        neighbourSessions = await leasesOf(neighbour.pool, neighbour.tenantId);
        expect(neighbourSessions.length).toBeGreaterThan(0);
      } finally {
        hold.release();
      }
      ({ move } = await moving);
      // The neighbour's sessions of the freeze are all there after the shut-out and the switch.
      const after = await leasesOf(neighbour.pool, neighbour.tenantId);
      expect(neighbourSessions.filter((pid) => !after.includes(pid))).toEqual([]);
      await new Promise((resolve) => setTimeout(resolve, 300));
    } finally {
      await Promise.all([load.stop(), neighbourLoad.stop()]);
    }
    expect(move).toMatchObject({
      state: MoveState.SUCCEEDED,
      mode: MoveMode.ONLINE,
      step: "close-source",
      sourceCluster: "default",
      targetCluster: "default",
      sourceDatabase: promoted.pool,
      targetDatabase: promoted.role,
      sourcePlacement: MovePlacement.POOLED,
      targetPlacement: MovePlacement.DEDICATED,
      sourceDropped: true,
    });
    expect(load.failed).toEqual([]);
    expect(neighbourLoad.failed).toEqual([]);
    expect(neighbourLoad.retried).toEqual({ writes: 0, reads: 0 });
    expect(load.acknowledged.size).toBeGreaterThan(10);
    const stored = await mesh.sql<{ title: string; id: string; copies: number }>(
      move!.targetDatabase,
      `select title, min(id::text) as id, count(*)::int as copies from ${promoted.schemaPrefix}backend.entries group by title`,
    );
    const byTitle = new Map(stored.map((row) => [row.title, row]));
    for (const [title, id] of load.acknowledged) {
      expect(byTitle.get(title), `acknowledged write ${title}`).toEqual({ title, id, copies: 1 });
    }
    expect(stored.filter((row) => row.copies !== 1)).toEqual([]);
    console.log(
      `promotion under load: ${load.acknowledged.size} writes acknowledged, ${load.reads} reads; retried ${load.retried.writes} writes and ${load.retried.reads} reads on UNAVAILABLE; neighbour ${neighbourLoad.acknowledged.size} writes, ${neighbourLoad.reads} reads; writes frozen ${Number(move!.writeFreeze!.seconds) * 1000 + move!.writeFreeze!.nanos / 1e6} ms`,
    );

    // Served from its own database, under the same schema names, with its own login.
    const tenant = (await mesh.platformClient.getTenant({ tenantId: promoted.tenantId })).tenant!;
    expect([tenant.placement, tenant.cluster, tenant.database, tenant.move]).toEqual([Placement.DEDICATED, "default", promoted.role, undefined]);
    expect(await retried(() => mesh.login(promoted.tenantId, owner))).toMatch(/^ey/);
    await retried(() => mesh.entries.createEntry({ title: "after the promotion" }, headers(promoted.tenantId)));
    expect(await titles(promoted.tenantId)).toEqual(expect.arrayContaining(["after the promotion", "first", "second", "third", ...load.acknowledged.keys()]));
    await mesh.sql(move!.targetDatabase, `insert into ${promoted.schemaPrefix}backend.tickets (note) values ('after the move')`);
    expect(await mesh.sql(move!.targetDatabase, `select max(number)::int as last from ${promoted.schemaPrefix}backend.tickets`)).toEqual([{ last: 6 }]);
    expect(await mesh.sql("postgres", "select rolcanlogin from pg_roles where rolname = $1", [promoted.role])).toEqual([{ rolcanlogin: true }]);
    // Nothing of it is left in the pool database, which goes on serving its neighbour.
    expect(await mesh.sql(promoted.pool, "select nspname from pg_namespace where starts_with(nspname, $1)", [promoted.schemaPrefix])).toEqual([]);
    expect(await mesh.sql(promoted.pool, "select relname from pg_class where relname like 'tenantry_move_marker%'")).toEqual([]);
    expect(await mesh.sql(promoted.pool, "select pubname from pg_publication")).toEqual([]);
    expect(await mesh.sql("postgres", "select 1 from pg_auth_members where roleid = $1::regrole and member = $2::regrole", [promoted.role, promoted.pool])).toEqual([]);
    expect(await replicationLeftovers("default")).toEqual([]);
    expect(await titles(neighbour.tenantId)).toEqual(expect.arrayContaining(["first", "second", "third", ...neighbourLoad.acknowledged.keys()]));
    expect(await retried(() => mesh.login(neighbour.tenantId, owner))).toMatch(/^ey/);
  });

  it("is promoted online to another cluster", async () => {
    const promoted = await pooledTenant("promoted-away");
    const { move } = await moves.moveTenant({ tenantId: promoted.tenantId, targetCluster: "second", targetPlacement: Placement.DEDICATED });
    expect(move).toMatchObject({ state: MoveState.SUCCEEDED, mode: MoveMode.ONLINE, targetCluster: "second", targetPlacement: MovePlacement.DEDICATED });
    const tenant = (await mesh.platformClient.getTenant({ tenantId: promoted.tenantId })).tenant!;
    expect([tenant.placement, tenant.cluster]).toEqual([Placement.DEDICATED, "second"]);
    expect(await titles(promoted.tenantId)).toEqual(["first", "second", "third"]);
    expect(await retried(() => mesh.login(promoted.tenantId, owner))).toMatch(/^ey/);
    expect(await second.sql(move!.targetDatabase, `select count(*)::int as n from ${promoted.schemaPrefix}backend.tickets`)).toEqual([{ n: 5 }]);
    // Its role stays behind on the source cluster no longer.
    expect(await mesh.sql("postgres", "select rolname from pg_roles where rolname = $1", [promoted.role])).toEqual([]);
    expect(await replicationLeftovers("default")).toEqual([]);
    expect(await replicationLeftovers("second")).toEqual([]);
  });

  it("is rolled back when it fails before the switch: pooled and served as before, its role given back to the pool", async () => {
    const promoted = await pooledTenant("promotion-rollback");
    const hold = holdMovesAfter("catch-up");
    const moving = failure(moves.moveTenant({ tenantId: promoted.tenantId, targetCluster: "default", targetPlacement: Placement.DEDICATED }));
    await hold.reached;
    try {
      await mesh.sql(promoted.role, `insert into ${promoted.schemaPrefix}backend.entries (id, title) values (gen_random_uuid(), 'only on the target')`);
    } finally {
      hold.release();
    }
    const error = await moving;
    expect([error.code, error.rawMessage]).toEqual([Code.FailedPrecondition, expect.stringMatching(/rolled back: table .*backend\.entries has 3 rows on the source and 4 on the target/)]);
    const tenant = (await mesh.platformClient.getTenant({ tenantId: promoted.tenantId })).tenant!;
    expect([tenant.placement, tenant.database, tenant.move]).toEqual([Placement.POOLED, promoted.pool, undefined]);
    await retried(() => mesh.entries.createEntry({ title: "after the rollback" }, headers(promoted.tenantId)));
    expect(await titles(promoted.tenantId)).toEqual(["after the rollback", "first", "second", "third"]);
    expect(await mesh.sql("postgres", "select datname from pg_database where datname = $1", [promoted.role])).toEqual([]);
    expect(await mesh.sql("postgres", "select rolcanlogin from pg_roles where rolname = $1", [promoted.role])).toEqual([{ rolcanlogin: false }]);
    expect(await mesh.sql(promoted.pool, "select relname from pg_class where relname like 'tenantry_move_marker%'")).toEqual([]);
    expect(await replicationLeftovers("default")).toEqual([]);
  });

  it("goes back into a pool database under freeze, on its own cluster or another, and out again online", async () => {
    const { tenantId, database } = await populatedTenant("demoted");
    const neighbour = await pooledTenant("demotion-neighbour");
    const prefix = `t_${tenantId.replaceAll("-", "_")}_`;
    const online = await failure(moves.moveTenant({ tenantId, targetCluster: "default", targetPlacement: Placement.POOLED, mode: MoveMode.ONLINE }));
    expect([online.code, online.rawMessage]).toEqual([Code.FailedPrecondition, expect.stringMatching(/under freeze only/)]);

    const { move } = await moves.moveTenant({ tenantId, targetCluster: "default", targetPlacement: Placement.POOLED, compareDigests: true });
    expect(move).toMatchObject({
      state: MoveState.SUCCEEDED,
      mode: MoveMode.COPY_UNDER_FREEZE,
      step: "close-source",
      sourceDatabase: database,
      targetDatabase: neighbour.pool,
      sourcePlacement: MovePlacement.DEDICATED,
      targetPlacement: MovePlacement.POOLED,
    });
    const pooled = (await mesh.platformClient.getTenant({ tenantId })).tenant!;
    expect([pooled.placement, pooled.cluster, pooled.database]).toEqual([Placement.POOLED, "default", neighbour.pool]);
    expect(await titles(tenantId)).toEqual(["first", "second", "third"]);
    expect(await retried(() => mesh.login(tenantId, owner))).toMatch(/^ey/);
    await retried(() => mesh.entries.createEntry({ title: "in the pool" }, headers(tenantId)));
    await mesh.sql(neighbour.pool, `insert into ${prefix}backend.tickets (note) values ('in the pool')`);
    expect(await mesh.sql(neighbour.pool, `select max(number)::int as last from ${prefix}backend.tickets`)).toEqual([{ last: 6 }]);
    expect(await mesh.sql("postgres", "select datallowconn from pg_database where datname = $1", [database])).toEqual([{ datallowconn: false }]);
    expect(await mesh.sql("postgres", "select rolcanlogin from pg_roles where rolname = $1", [database])).toEqual([{ rolcanlogin: false }]);
    expect(await titles(neighbour.tenantId)).toEqual(["first", "second", "third"]);

    // Out again online (its schema prefix kept) to another cluster, and into a pool database there, which has none yet: one is made.
    const { move: away } = await moves.moveTenant({ tenantId, targetCluster: "second", targetPlacement: Placement.DEDICATED });
    expect(away).toMatchObject({ state: MoveState.SUCCEEDED, mode: MoveMode.ONLINE, targetPlacement: MovePlacement.DEDICATED });
    const { move: pooledThere } = await moves.moveTenant({ tenantId, targetCluster: "second", targetPlacement: Placement.POOLED });
    expect(pooledThere).toMatchObject({ state: MoveState.SUCCEEDED, mode: MoveMode.COPY_UNDER_FREEZE, targetCluster: "second", targetPlacement: MovePlacement.POOLED });
    expect(pooledThere!.targetDatabase).toMatch(/_pool_\d+$/);
    expect(await second.sql(pooledThere!.targetDatabase, "select nspname from pg_namespace where starts_with(nspname, $1) order by 1", [prefix])).toEqual([
      { nspname: `${prefix}auth` },
      { nspname: `${prefix}backend` },
    ]);
    expect(await titles(tenantId)).toEqual(["first", "in the pool", "second", "third"]);
    expect(await retried(() => mesh.login(tenantId, owner))).toMatch(/^ey/);
    expect(await replicationLeftovers("default")).toEqual([]);
    expect(await replicationLeftovers("second")).toEqual([]);
  });

  it("is left in its own database when its move into a pool database fails: nothing left in the pool, its role as before", async () => {
    const { tenantId, database } = await populatedTenant("demotion-rollback");
    const prefix = `t_${tenantId.replaceAll("-", "_")}_`;
    const hold = holdMovesAfter("migrate-schemas");
    const moving = failure(moves.moveTenant({ tenantId, targetCluster: "default", targetPlacement: Placement.POOLED }));
    await hold.reached;
    let pool = "";
    try {
      pool = (await moves.listMoves({ tenantId })).moves[0]!.targetDatabase;
      // The copy cannot load a table that is gone.
      await mesh.sql(pool, `drop table ${prefix}backend.tickets`);
    } finally {
      hold.release();
    }
    const error = await moving;
    expect(error.rawMessage).toMatch(/rolled back/);
    const tenant = (await mesh.platformClient.getTenant({ tenantId })).tenant!;
    expect([tenant.placement, tenant.database, tenant.move]).toEqual([Placement.DEDICATED, database, undefined]);
    await retried(() => mesh.entries.createEntry({ title: "after the rollback" }, headers(tenantId)));
    expect(await titles(tenantId)).toEqual(["after the rollback", "first", "second", "third"]);
    expect(await mesh.sql(pool, "select nspname from pg_namespace where starts_with(nspname, $1)", [prefix])).toEqual([]);
    expect(await mesh.sql("postgres", "select rolcanlogin from pg_roles where rolname = $1", [database])).toEqual([{ rolcanlogin: true }]);
    expect(await mesh.sql("postgres", "select 1 from pg_auth_members where roleid = $1::regrole and member = $2::regrole", [database, pool])).toEqual([]);
  });

  it("moves online to a pool database of another cluster under writes, keeping its placement and schema prefix: none lost, its pool neighbours served", async () => {
    const moved = await pooledTenant("pool-to-pool");
    const neighbour = await pooledTenant("pool-to-pool-neighbour");
    expect(neighbour.pool).toBe(moved.pool);
    const load = startLoad(moved.tenantId, { writers: 3, readers: 1 });
    const neighbourLoad = startLoad(neighbour.tenantId, { writers: 1, readers: 1 });
    let move: Awaited<ReturnType<typeof moves.moveTenant>>["move"];
    try {
      // No target placement: the tenant keeps its own.
      ({ move } = await moves.moveTenant({ tenantId: moved.tenantId, targetCluster: "second" }, { timeoutMs: 120_000 }));
      await new Promise((resolve) => setTimeout(resolve, 300));
    } finally {
      await Promise.all([load.stop(), neighbourLoad.stop()]);
    }
    expect(move).toMatchObject({
      state: MoveState.SUCCEEDED,
      mode: MoveMode.ONLINE,
      step: "close-source",
      sourceCluster: "default",
      targetCluster: "second",
      sourceDatabase: moved.pool,
      sourcePlacement: MovePlacement.POOLED,
      targetPlacement: MovePlacement.POOLED,
      sourceDropped: true,
    });
    expect(move!.targetDatabase).toMatch(/_pool_\d+$/);
    expect(load.failed).toEqual([]);
    expect(neighbourLoad.failed).toEqual([]);
    expect(neighbourLoad.retried).toEqual({ writes: 0, reads: 0 });
    expect(load.acknowledged.size).toBeGreaterThan(10);
    const stored = await second.sql<{ title: string; id: string; copies: number }>(
      move!.targetDatabase,
      `select title, min(id::text) as id, count(*)::int as copies from ${moved.schemaPrefix}backend.entries group by title`,
    );
    const byTitle = new Map(stored.map((row) => [row.title, row]));
    for (const [title, id] of load.acknowledged) {
      expect(byTitle.get(title), `acknowledged write ${title}`).toEqual({ title, id, copies: 1 });
    }
    expect(stored.filter((row) => row.copies !== 1)).toEqual([]);
    console.log(
      `pooled move to another cluster's pool under load: ${load.acknowledged.size} writes acknowledged, ${load.reads} reads; retried ${load.retried.writes} writes and ${load.retried.reads} reads on UNAVAILABLE; neighbour ${neighbourLoad.acknowledged.size} writes, ${neighbourLoad.reads} reads; writes frozen ${Number(move!.writeFreeze!.seconds) * 1000 + move!.writeFreeze!.nanos / 1e6} ms`,
    );

    // Pooled there, under the same schema names, its NOLOGIN role taken on through that pool's login.
    const tenant = (await mesh.platformClient.getTenant({ tenantId: moved.tenantId })).tenant!;
    expect([tenant.placement, tenant.cluster, tenant.database, tenant.move]).toEqual([Placement.POOLED, "second", move!.targetDatabase, undefined]);
    expect(await second.sql(move!.targetDatabase, "select nspname from pg_namespace where starts_with(nspname, $1) order by 1", [moved.schemaPrefix])).toEqual([
      { nspname: `${moved.schemaPrefix}auth` },
      { nspname: `${moved.schemaPrefix}backend` },
    ]);
    expect(await second.sql("postgres", "select rolcanlogin from pg_roles where rolname = $1", [moved.role])).toEqual([{ rolcanlogin: false }]);
    expect(await second.sql("postgres", "select 1 as granted from pg_auth_members where roleid = $1::regrole and member = $2::regrole", [moved.role, move!.targetDatabase])).toEqual([{ granted: 1 }]);
    expect(await retried(() => mesh.login(moved.tenantId, owner))).toMatch(/^ey/);
    await retried(() => mesh.entries.createEntry({ title: "after the move" }, headers(moved.tenantId)));
    expect(await titles(moved.tenantId)).toEqual(expect.arrayContaining(["after the move", "first", "second", "third", ...load.acknowledged.keys()]));
    await second.sql(move!.targetDatabase, `insert into ${moved.schemaPrefix}backend.tickets (note) values ('after the move')`);
    expect(await second.sql(move!.targetDatabase, `select max(number)::int as last from ${moved.schemaPrefix}backend.tickets`)).toEqual([{ last: 6 }]);
    expect(await second.sql(move!.targetDatabase, "select relname from pg_class where relname like 'tenantry_move_marker%'")).toEqual([]);
    // Nothing of it is left on the source cluster, whose pool database goes on serving its neighbour.
    expect(await mesh.sql(moved.pool, "select nspname from pg_namespace where starts_with(nspname, $1)", [moved.schemaPrefix])).toEqual([]);
    expect(await mesh.sql(moved.pool, "select relname from pg_class where relname like 'tenantry_move_marker%'")).toEqual([]);
    expect(await mesh.sql(moved.pool, "select pubname from pg_publication")).toEqual([]);
    expect(await mesh.sql("postgres", "select rolname from pg_roles where rolname = $1", [moved.role])).toEqual([]);
    expect(await replicationLeftovers("default")).toEqual([]);
    expect(await replicationLeftovers("second")).toEqual([]);
    expect(await titles(neighbour.tenantId)).toEqual(expect.arrayContaining(["first", "second", "third", ...neighbourLoad.acknowledged.keys()]));
    expect(await retried(() => mesh.login(neighbour.tenantId, owner))).toMatch(/^ey/);
  });

  it("is rolled back when its move to another cluster's pool fails before the switch: served from its pool as before, nothing of it left in the target pool, whose tenants stay", async () => {
    const moving = await pooledTenant("pool-to-pool-rollback");
    const hold = holdMovesAfter("catch-up");
    const pending = failure(moves.moveTenant({ tenantId: moving.tenantId, targetCluster: "second" }));
    await hold.reached;
    let pool = "";
    let others: { nspname: string }[] = [];
    try {
      pool = (await moves.listMoves({ tenantId: moving.tenantId })).moves[0]!.targetDatabase;
      others = await second.sql(pool, "select nspname from pg_namespace where starts_with(nspname, 't_') and not starts_with(nspname, $1) order by 1", [moving.schemaPrefix]);
      await second.sql(pool, `insert into ${moving.schemaPrefix}backend.entries (id, title) values (gen_random_uuid(), 'only on the target')`);
    } finally {
      hold.release();
    }
    const error = await pending;
    expect([error.code, error.rawMessage]).toEqual([Code.FailedPrecondition, expect.stringMatching(/rolled back: table .*backend\.entries has 3 rows on the source and 4 on the target/)]);
    const tenant = (await mesh.platformClient.getTenant({ tenantId: moving.tenantId })).tenant!;
    expect([tenant.placement, tenant.cluster, tenant.database, tenant.move]).toEqual([Placement.POOLED, "default", moving.pool, undefined]);
    await retried(() => mesh.entries.createEntry({ title: "after the rollback" }, headers(moving.tenantId)));
    expect(await titles(moving.tenantId)).toEqual(["after the rollback", "first", "second", "third"]);
    expect(await mesh.sql("postgres", "select 1 as granted from pg_auth_members where roleid = $1::regrole and member = $2::regrole", [moving.role, moving.pool])).toEqual([{ granted: 1 }]);
    // The target pool database stays, with its other tenants' schemas and without the tenant's, nor its role.
    expect(others.length).toBeGreaterThan(0);
    expect(await second.sql("postgres", "select datname from pg_database where datname = $1", [pool])).toEqual([{ datname: pool }]);
    expect(await second.sql(pool, "select nspname from pg_namespace where starts_with(nspname, 't_') order by 1")).toEqual(others);
    expect(await second.sql("postgres", "select rolname from pg_roles where rolname = $1", [moving.role])).toEqual([]);
    expect(await second.sql(pool, "select relname from pg_class where relname like 'tenantry_move_marker%'")).toEqual([]);
    expect(await mesh.sql(moving.pool, "select relname from pg_class where relname like 'tenantry_move_marker%'")).toEqual([]);
    expect(await replicationLeftovers("default")).toEqual([]);
    expect(await replicationLeftovers("second")).toEqual([]);
  });

  it("refuses what it cannot do: another pool database of its own cluster left unnamed, or a copy under freeze (its pool database cannot refuse its writes alone)", async () => {
    const pooled = await pooledTenant("promotion-refused");
    const again = await failure(moves.moveTenant({ tenantId: pooled.tenantId, targetCluster: "default", targetPlacement: Placement.POOLED }));
    expect([again.code, again.rawMessage]).toEqual([Code.FailedPrecondition, expect.stringMatching(/is pooled on cluster "default" already: name the pool database to move it to \(target_pool_database\)/)]);
    for (const targetPlacement of [Placement.DEDICATED, Placement.UNSPECIFIED]) {
      const frozen = await failure(moves.moveTenant({ tenantId: pooled.tenantId, targetCluster: "second", targetPlacement, mode: MoveMode.COPY_UNDER_FREEZE }));
      expect([frozen.code, frozen.rawMessage]).toEqual([
        Code.FailedPrecondition,
        `tenant "${pooled.tenantId}" is pooled: it moves online only (under freeze its pool database could not refuse its writes alone: its sessions are the pool's login's, shared with its neighbours); use MOVE_MODE_AUTO or MOVE_MODE_ONLINE`,
      ]);
    }
    expect((await failure(moves.moveTenant({ tenantId: pooled.tenantId, targetCluster: "second", targetPlacement: 7 as Placement }))).code).toBe(Code.InvalidArgument);
    expect((await moves.listMoves({ tenantId: pooled.tenantId })).moves).toEqual([]);
  });
});

describe("a tier change", () => {
  it("starts the move to the new tier's placement and says so; a tier of the same placement moves nothing", async () => {
    const pooled = await pooledTenant("tier-change");
    const { tenant, move } = await mesh.platformClient.updateTenant({ tenantId: pooled.tenantId, tier: Tier.PREMIUM, updateMask: { paths: ["tier"] } });
    expect(tenant!.tier).toBe(Tier.PREMIUM);
    expect(move).toMatchObject({ state: MoveState.RUNNING, tenantId: pooled.tenantId, targetCluster: "default", sourcePlacement: MovePlacement.POOLED, targetPlacement: MovePlacement.DEDICATED });
    expect(tenant!.move?.moveId).toBe(move!.moveId);
    const deadline = Date.now() + 60_000;
    while ((await moves.getMove({ moveId: move!.moveId })).move!.state === MoveState.RUNNING && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect((await moves.getMove({ moveId: move!.moveId })).move).toMatchObject({ state: MoveState.SUCCEEDED, step: "close-source" });
    const promoted = (await mesh.platformClient.getTenant({ tenantId: pooled.tenantId })).tenant!;
    expect([promoted.placement, promoted.tier, promoted.database]).toEqual([Placement.DEDICATED, Tier.PREMIUM, pooled.role]);
    expect(await titles(pooled.tenantId)).toEqual(["first", "second", "third"]);
    expect(await retried(() => mesh.login(pooled.tenantId, owner))).toMatch(/^ey/);

    const unchanged = await mesh.platformClient.updateTenant({ tenantId: pooled.tenantId, tier: Tier.ENTERPRISE, updateMask: { paths: ["tier"] } });
    expect([unchanged.tenant!.tier, unchanged.move]).toEqual([Tier.ENTERPRISE, undefined]);
    expect((await moves.listMoves({ tenantId: pooled.tenantId })).moves).toHaveLength(1);
  });
});
