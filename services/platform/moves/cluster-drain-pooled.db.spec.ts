import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ClusterService, ClusterState } from "../../../gen/tenantry/platform/v1/cluster_service_pb.js";
import { MoveMode, MovePlacement, MoveState } from "../../../gen/tenantry/platform/v1/move_pb.js";
import { DrainEvent, MoveService, type DrainClusterResponse } from "../../../gen/tenantry/platform/v1/move_service_pb.js";
import { Placement } from "../../../gen/tenantry/platform/v1/platform_service_pb.js";
import { operatorCredentialInterceptor } from "../../mesh/index.ts";
import { retried } from "../../testing/retried.ts";
import { startSecondServer, type SecondServer } from "../../testing/second-server.ts";
import { startTestMesh, type TestMesh } from "../../testing/test-mesh.ts";

const owner = { email: "owner@example.com", password: "correct horse battery" };
const headers = (tenantId: string) => ({ headers: { "x-tenant-id": tenantId } });

let mesh: TestMesh;
let second: SecondServer;
let moves: Client<typeof MoveService>;
let clusters: Client<typeof ClusterService>;

beforeAll(async () => {
  [mesh, second] = await Promise.all([startTestMesh({ services: ["auth", "backend"] }), startSecondServer()]);
  const operator = [operatorCredentialInterceptor(mesh.operatorToken)];
  moves = mesh.client("platform", MoveService, operator);
  clusters = mesh.client("platform", ClusterService, operator);
});
afterAll(async () => {
  await mesh?.stop();
  await second?.stop();
});

/** A tenant with its owner and entries, on cluster "default" (the only one yet). */
async function populatedTenant(prefix: string, placement: Placement): Promise<{ tenantId: string; database: string }> {
  const tenant = await mesh.createTenant({ tenantId: mesh.uniqueTenantId(prefix), owner, placement });
  for (const title of ["first", "second"]) {
    await mesh.entries.createEntry({ title: `${title} of ${tenant.tenantId}` }, headers(tenant.tenantId));
  }
  expect((await mesh.platformClient.getTenant({ tenantId: tenant.tenantId })).tenant!.cluster).toBe("default");
  return { tenantId: tenant.tenantId, database: tenant.database };
}

describe("draining a cluster that holds a pool database", () => {
  let dedicated: { tenantId: string; database: string };
  let pooled: { tenantId: string; database: string }[];

  it("counts its pooled tenants against the targets' pool capacity: refused, changing nothing, when that has too little room, whatever their capacity", async () => {
    dedicated = await populatedTenant("drained-own", Placement.DEDICATED);
    pooled = [await populatedTenant("drained-pooled", Placement.POOLED), await populatedTenant("drained-pooled", Placement.POOLED)];
    expect(pooled[1]!.database).toBe(pooled[0]!.database);
    await clusters.registerCluster(second.registration("second", { capacity: 100, poolCapacity: 1 }));

    const refused: DrainClusterResponse[] = [];
    const error = await (async () => {
      for await (const event of moves.drainCluster({ cluster: "default" })) {
        refused.push(event);
      }
    })().catch((cause: unknown) => ConnectError.from(cause));
    expect([refused, error?.code, error?.rawMessage]).toEqual([
      [],
      Code.ResourceExhausted,
      'the clusters that accept tenants have too little room for the tenants of cluster "default": 2 pooled tenants must move and their pool capacity has room for 1; raise their pool capacity (RegisterCluster) or register another',
    ]);
    expect((await clusters.listClusters({})).clusters.find((c) => c.name === "default")?.state).toBe(ClusterState.ACCEPTING);
    expect((await moves.listMoves({})).moves).toEqual([]);
  });

  it("moves its dedicated tenants and, online into a pool database of the target, its pooled ones: the cluster is left empty", async () => {
    // Room for the one dedicated tenant only: the pooled ones take places of the pool capacity, not of this.
    await clusters.registerCluster(second.registration("second", { capacity: 1, poolCapacity: 2 }));

    // Asked under freeze: the pooled tenants move online all the same, the only way they move.
    const events: DrainClusterResponse[] = [];
    let error: ConnectError | undefined;
    try {
      for await (const event of moves.drainCluster({ cluster: "default", maxConcurrency: 2, mode: MoveMode.COPY_UNDER_FREEZE })) {
        events.push(event);
      }
    } catch (cause) {
      error = ConnectError.from(cause);
    }
    expect([events.filter((e) => e.event === DrainEvent.MOVE_FAILED).map((e) => [e.tenantId, e.error]), error?.code, error?.rawMessage]).toEqual([[], undefined, undefined]);
    expect(events.at(-1)).toMatchObject({ event: DrainEvent.FINISHED, totals: { total: 3, moved: 3, failed: 0, left: 0, remaining: 0, moving: 0 } });

    const { moves: made } = await moves.listMoves({});
    const byTenant = new Map(made.map((move) => [move.tenantId, move]));
    expect(byTenant.get(dedicated.tenantId)).toMatchObject({ state: MoveState.SUCCEEDED, mode: MoveMode.COPY_UNDER_FREEZE, targetPlacement: MovePlacement.DEDICATED });
    for (const { tenantId } of pooled) {
      expect(byTenant.get(tenantId)).toMatchObject({ state: MoveState.SUCCEEDED, mode: MoveMode.ONLINE, sourcePlacement: MovePlacement.POOLED, targetPlacement: MovePlacement.POOLED });
    }
    for (const { tenantId } of [dedicated, ...pooled]) {
      const tenant = (await mesh.platformClient.getTenant({ tenantId })).tenant!;
      expect([tenantId, tenant.cluster, tenant.placement]).toEqual([tenantId, "second", tenantId === dedicated.tenantId ? Placement.DEDICATED : Placement.POOLED]);
      expect(await retried(() => mesh.login(tenantId, owner))).toMatch(/^ey/);
      await retried(() => mesh.entries.createEntry({ title: `after the drain of ${tenantId}` }, headers(tenantId)));
      const { entries } = await retried(() => mesh.entries.listEntries({}, headers(tenantId)));
      expect(entries.map((e) => e.title).sort()).toEqual([`after the drain of ${tenantId}`, `first of ${tenantId}`, `second of ${tenantId}`]);
    }
    // Both pooled tenants went into the same pool database there (as provisioning fills one), under their prefixes.
    const [first, other] = pooled.map(({ tenantId }) => byTenant.get(tenantId)!.targetDatabase);
    expect(first).toBe(other);
    expect(await second.sql(first!, "select count(*)::int as n from pg_namespace where starts_with(nspname, 't_')")).toEqual([{ n: 4 }]);

    // Nothing of the pooled tenants is left on the drained cluster (the dedicated one's database is kept, closed, for a while); its pool database stays, empty.
    expect(await mesh.sql(pooled[0]!.database, "select nspname from pg_namespace where starts_with(nspname, 't_')")).toEqual([]);
    const roles = pooled.map(({ tenantId }) => `tenant_${tenantId.replaceAll("-", "_")}`);
    expect(await mesh.sql("postgres", "select rolname from pg_roles where rolname = any($1)", [roles])).toEqual([]);
    expect(await mesh.sql("postgres", "select datallowconn from pg_database where datname = $1", [dedicated.database])).toEqual([{ datallowconn: false }]);
    expect((await clusters.listClusters({})).clusters.find((c) => c.name === "default")?.state).toBe(ClusterState.DRAINING);
    const again: DrainClusterResponse[] = [];
    for await (const event of moves.drainCluster({ cluster: "default" })) {
      again.push(event);
    }
    expect(again.at(-1)).toMatchObject({ event: DrainEvent.FINISHED, totals: { total: 0 } });
  });
});
