import { Code, type Client } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ClusterService, PoolDatabaseState } from "../../../gen/tenantry/platform/v1/cluster_service_pb.js";
import { MoveMode, MovePlacement, MoveState } from "../../../gen/tenantry/platform/v1/move_pb.js";
import { MoveService } from "../../../gen/tenantry/platform/v1/move_service_pb.js";
import { Placement } from "../../../gen/tenantry/platform/v1/platform_service_pb.js";
import { operatorCredentialInterceptor } from "../../mesh/index.ts";
import { failure } from "../../testing/failure.ts";
import { holdLock } from "../../testing/held-lock.ts";
import { retried } from "../../testing/retried.ts";
import { startTestMesh, type TestMesh } from "../../testing/test-mesh.ts";

const owner = { email: "owner@example.com", password: "correct horse battery" };
const headers = (tenantId: string) => ({ headers: { "x-tenant-id": tenantId } });

let mesh: TestMesh;
let moves: Client<typeof MoveService>;
let clusters: Client<typeof ClusterService>;

beforeAll(async () => {
  mesh = await startTestMesh({ services: ["auth", "backend"] });
  // Two tenants fill a pool database: the third makes the cluster's second.
  await mesh.restartPlatform({ TENANTRY_POOL_MAX_TENANTS: "2" });
  const operator = [operatorCredentialInterceptor(mesh.operatorToken)];
  moves = mesh.client("platform", MoveService, operator);
  clusters = mesh.client("platform", ClusterService, operator);
});
afterAll(async () => {
  await mesh?.stop();
});

/** A pooled tenant of cluster "default" with its owner and entries. */
async function pooledTenant(prefix: string): Promise<{ tenantId: string; pool: string; schemaPrefix: string; role: string }> {
  const tenantId = mesh.uniqueTenantId(prefix);
  const tenant = await mesh.createTenant({ tenantId, owner, placement: Placement.POOLED });
  for (const title of ["first", "second"]) {
    await mesh.entries.createEntry({ title }, headers(tenantId));
  }
  return { tenantId, pool: tenant.database, schemaPrefix: `t_${tenantId.replaceAll("-", "_")}_`, role: `tenant_${tenantId.replaceAll("-", "_")}` };
}

async function titles(tenantId: string): Promise<string[]> {
  const { entries } = await retried(() => mesh.entries.listEntries({ pageSize: 500 }, headers(tenantId)));
  return entries.map((e) => e.title).sort();
}

const granted = async (role: string, pool: string) =>
  (await mesh.sql("postgres", "select 1 from pg_auth_members where roleid = $1::regrole and member = $2::regrole", [role, pool])).length === 1;

/** Tenants of the first pool database (moved, neighbour) and of the second (other). */
let moved: Awaited<ReturnType<typeof pooledTenant>>;
let neighbour: Awaited<ReturnType<typeof pooledTenant>>;
let other: Awaited<ReturnType<typeof pooledTenant>>;

describe("a pooled tenant moved to another pool database of its own cluster", () => {

  it("goes online into the pool database named, keeping its role and schema prefix: nothing of it left in the pool it leaves, whose neighbour is served", async () => {
    moved = await pooledTenant("rebalanced");
    neighbour = await pooledTenant("stays");
    other = await pooledTenant("elsewhere");
    expect(neighbour.pool).toBe(moved.pool);
    expect(other.pool).not.toBe(moved.pool);

    const { move } = await moves.moveTenant({ tenantId: moved.tenantId, targetCluster: "default", targetPoolDatabase: other.pool });
    expect(move).toMatchObject({
      state: MoveState.SUCCEEDED,
      mode: MoveMode.ONLINE,
      step: "close-source",
      sourceCluster: "default",
      targetCluster: "default",
      sourceDatabase: moved.pool,
      targetDatabase: other.pool,
      sourcePlacement: MovePlacement.POOLED,
      targetPlacement: MovePlacement.POOLED,
    });
    const tenant = (await mesh.platformClient.getTenant({ tenantId: moved.tenantId })).tenant!;
    expect([tenant.placement, tenant.cluster, tenant.database, tenant.move]).toEqual([Placement.POOLED, "default", other.pool, undefined]);
    expect(await retried(() => mesh.login(moved.tenantId, owner))).toMatch(/^ey/);
    await retried(() => mesh.entries.createEntry({ title: "after the move" }, headers(moved.tenantId)));
    expect(await titles(moved.tenantId)).toEqual(["after the move", "first", "second"]);

    // Its schemas are in the pool named, under its prefix, its role (kept: one server) taken on by that pool's login only.
    expect(await mesh.sql(other.pool, "select nspname from pg_namespace where starts_with(nspname, $1) order by 1", [moved.schemaPrefix])).toEqual([
      { nspname: `${moved.schemaPrefix}auth` },
      { nspname: `${moved.schemaPrefix}backend` },
    ]);
    expect(await mesh.sql(moved.pool, "select nspname from pg_namespace where starts_with(nspname, $1)", [moved.schemaPrefix])).toEqual([]);
    expect([await granted(moved.role, other.pool), await granted(moved.role, moved.pool)]).toEqual([true, false]);
    expect(await mesh.sql("postgres", "select rolcanlogin from pg_roles where rolname = $1", [moved.role])).toEqual([{ rolcanlogin: false }]);
    for (const pool of [moved.pool, other.pool]) {
      expect(await mesh.sql(pool, "select relname from pg_class where relname like 'tenantry_move_marker%'")).toEqual([]);
      expect(await mesh.sql(pool, "select pubname from pg_publication")).toEqual([]);
    }
    expect(await mesh.sql("postgres", "select slot_name from pg_replication_slots where slot_name like 'tenantry_move_%' union all select subname from pg_subscription where subname like 'tenantry_move_%'")).toEqual([]);
    for (const { tenantId } of [neighbour, other]) {
      expect(await titles(tenantId)).toEqual(["first", "second"]);
      expect(await retried(() => mesh.login(tenantId, owner))).toMatch(/^ey/);
    }
  });

  it("is refused, before anything is made, unnamed, into its own pool database, one unknown, full or draining, or with a database of its own", async () => {
    const refusals: [Parameters<typeof moves.moveTenant>[0], Code, RegExp][] = [
      [{ tenantId: neighbour.tenantId, targetCluster: "default" }, Code.FailedPrecondition, /is pooled on cluster "default" already: name the pool database to move it to \(target_pool_database\)/],
      [{ tenantId: neighbour.tenantId, targetCluster: "default", targetPoolDatabase: neighbour.pool }, Code.InvalidArgument, /is in pool database ".*" of cluster "default" already/],
      [{ tenantId: neighbour.tenantId, targetCluster: "default", targetPoolDatabase: "nowhere_pool_9" }, Code.NotFound, /cluster "default" has no pool database "nowhere_pool_9"/],
      [{ tenantId: neighbour.tenantId, targetCluster: "default", targetPoolDatabase: other.pool }, Code.ResourceExhausted, /is full \(2 tenants, at most 2\)/],
      [{ tenantId: neighbour.tenantId, targetCluster: "default", targetPlacement: Placement.DEDICATED, targetPoolDatabase: other.pool }, Code.InvalidArgument, /would have a database of its own/],
    ];
    for (const [request, code, message] of refusals) {
      const error = await failure(moves.moveTenant(request));
      expect([request, error.code, error.rawMessage]).toEqual([request, code, expect.stringMatching(message)]);
    }
    expect((await moves.listMoves({})).moves).toHaveLength(1);
  });
});

describe("a draining pool database", () => {
  it("takes no new tenant, neither provisioned nor moved in, until it is ready again; the pool databases are listed with their states and tenants", async () => {
    // The first pool database holds one tenant since the move: room for one more.
    const pools = await clusters.listPoolDatabases({ cluster: "default" });
    expect(pools.poolDatabases.map((p) => [p.name, p.state, p.tenantCount])).toEqual([
      [neighbour.pool, PoolDatabaseState.READY, 1],
      [other.pool, PoolDatabaseState.READY, 2],
    ]);
    const { poolDatabase } = await clusters.setPoolDatabaseState({ cluster: "default", poolDatabase: neighbour.pool, state: PoolDatabaseState.DRAINING });
    expect(poolDatabase).toMatchObject({ cluster: "default", name: neighbour.pool, state: PoolDatabaseState.DRAINING, tenantCount: 1 });

    // Provisioning passes it by, though it has room, and makes a third.
    const fresh = await pooledTenant("fresh");
    expect([fresh.pool === neighbour.pool, fresh.pool === other.pool]).toEqual([false, false]);
    const named = await failure(moves.moveTenant({ tenantId: fresh.tenantId, targetCluster: "default", targetPoolDatabase: neighbour.pool }));
    expect([named.code, named.rawMessage]).toEqual([Code.FailedPrecondition, `pool database "${neighbour.pool}" of cluster "default" is draining and takes no tenants; name another, or leave target_pool_database empty`]);
    // Its tenant is served meanwhile, and moves out of it: it is empty.
    expect(await titles(neighbour.tenantId)).toEqual(["first", "second"]);
    await moves.moveTenant({ tenantId: neighbour.tenantId, targetCluster: "default", targetPoolDatabase: fresh.pool });
    expect(await titles(neighbour.tenantId)).toEqual(["first", "second"]);
    expect((await clusters.listPoolDatabases({ cluster: "default" })).poolDatabases.find((p) => p.name === neighbour.pool)?.tenantCount).toBe(0);

    // Ready again, it takes the next tenant (the fullest with room, the others being full).
    await clusters.setPoolDatabaseState({ cluster: "default", poolDatabase: neighbour.pool, state: PoolDatabaseState.READY });
    expect((await pooledTenant("after")).pool).toBe(neighbour.pool);

    const refusals: [Parameters<typeof clusters.setPoolDatabaseState>[0], Code][] = [
      [{ cluster: "default", poolDatabase: neighbour.pool, state: PoolDatabaseState.UNSPECIFIED }, Code.InvalidArgument],
      [{ cluster: "default", poolDatabase: neighbour.pool, state: 9 as PoolDatabaseState }, Code.InvalidArgument],
      [{ cluster: "default", poolDatabase: "nowhere_pool_9", state: PoolDatabaseState.DRAINING }, Code.NotFound],
      [{ cluster: "nowhere", poolDatabase: neighbour.pool, state: PoolDatabaseState.DRAINING }, Code.NotFound],
    ];
    for (const [request, code] of refusals) {
      expect([request, (await failure(clusters.setPoolDatabaseState(request))).code]).toEqual([request, code]);
    }
    expect((await failure(clusters.listPoolDatabases({ cluster: "nowhere" }))).code).toBe(Code.NotFound);
    expect((await clusters.listPoolDatabases({ cluster: "default" })).poolDatabases.every((p) => p.state === PoolDatabaseState.READY)).toBe(true);
  });
});

describe("a move into a pool database", () => {
  it("holds its place there while under way: a second move named there is refused, and provisioning passes it by", async () => {
    // The first pool database holds one tenant ("after"): room for one more, which the move takes.
    const roomy = (await clusters.listPoolDatabases({ cluster: "default" })).poolDatabases.find((p) => p.name === neighbour.pool)!;
    expect(roomy.tenantCount).toBe(1);
    // The move goes as far as its first read of the tenant's tables, and waits there while the others are asked
    // ("moved" is in the second pool database since the first move).
    const lock = await holdLock(mesh.databaseUrl(other.pool), `lock table ${moved.schemaPrefix}backend.entries in access exclusive mode`);
    let moving: ReturnType<typeof moves.moveTenant>;
    try {
      moving = moves.moveTenant({ tenantId: moved.tenantId, targetCluster: "default", targetPoolDatabase: roomy.name });
      moving.catch(() => undefined);
      // Its first read of the tenant's tables (their sizes) waits for the lock.
      await lock.waitingFor([/pg_total_relation_size/]);
      expect((await moves.listMoves({ tenantId: moved.tenantId })).moves.filter((m) => m.state === MoveState.RUNNING).map((m) => m.targetDatabase)).toEqual([roomy.name]);

      const named = await failure(moves.moveTenant({ tenantId: neighbour.tenantId, targetCluster: "default", targetPoolDatabase: roomy.name }));
      expect([named.code, named.rawMessage]).toEqual([Code.ResourceExhausted, `pool database "${roomy.name}" of cluster "default" is full (1 tenant and 1 moving in, at most 2); name another, or leave target_pool_database empty`]);
      const meanwhile = await pooledTenant("meanwhile");
      expect(meanwhile.pool).not.toBe(roomy.name);
    } finally {
      await lock.release();
    }

    expect((await moving).move).toMatchObject({ state: MoveState.SUCCEEDED, targetDatabase: roomy.name });
    const pools = (await clusters.listPoolDatabases({ cluster: "default" })).poolDatabases;
    expect(pools.find((p) => p.name === roomy.name)?.tenantCount).toBe(2);
    expect(pools.every((p) => p.tenantCount <= 2)).toBe(true);
    expect(await titles(moved.tenantId)).toEqual(["after the move", "first", "second"]);
  });
});
