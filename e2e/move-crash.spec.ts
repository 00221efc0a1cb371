import { Code, createClient, type Client } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ClusterService, ClusterState } from "../gen/tenantry/platform/v1/cluster_service_pb.js";
import { MoveMode } from "../gen/tenantry/platform/v1/move_pb.js";
import { DrainEvent, MoveService } from "../gen/tenantry/platform/v1/move_service_pb.js";
import { Placement, TenantStatus } from "../gen/tenantry/platform/v1/platform_service_pb.js";
import { operatorCredentialInterceptor } from "../services/mesh/index.ts";
import { moveSteps } from "../services/platform/moves/index.ts";
import { callAndCrash } from "../services/testing/platform-crash.ts";
import { retried } from "../services/testing/retried.ts";
import { startSecondServer, type SecondServer } from "../services/testing/second-server.ts";
import { startTestMesh, type TestMesh } from "../services/testing/test-mesh.ts";

const owner = { email: "owner@example.com", password: "correct horse battery" };
const headers = (tenantId: string) => ({ headers: { "x-tenant-id": tenantId } });

let mesh: TestMesh;
let second: SecondServer;
beforeAll(async () => {
  [mesh, second] = await Promise.all([
    startTestMesh({
      services: ["auth", "backend"],
      // The first sweep (at start) goes on with what a crash left; later ones need not come soon.
      platformEnv: { TENANTRY_OFFBOARDING_CHECK_INTERVAL_MS: "600000" },
    }),
    startSecondServer(),
  ]);
  await mesh.client("platform", ClusterService, [operatorCredentialInterceptor(mesh.operatorToken)]).registerCluster(second.registration("second"));
});
afterAll(async () => {
  await mesh?.stop();
  await second?.stop();
});

/** Has a Platform that kills itself after `step` run `call` with a MoveService client, checks it died there, and starts the mesh's Platform again. */
async function crashAfter(step: string, call: (client: Client<typeof MoveService>) => Promise<unknown>): Promise<void> {
  const crash = await callAndCrash(mesh, step, (t) => call(createClient(MoveService, t)));
  expect(crash.signal, `Platform should have been killed after ${step}`).toBe("SIGKILL");
  expect(crash.reaped, `Platform did not kill itself after ${step}`).toBe(false);
  expect(crash.error?.code).toBe(Code.Unavailable);
  await mesh.restartPlatform();
}

/** Waits until no move of the tenant is left under way (the restarted Platform goes on with it). */
async function settled(tenantId: string): Promise<{ state: string; step: string; error: string | null }> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const [move] = await mesh.sql<{ state: string; step: string; error: string | null }>(
      mesh.platformDatabase,
      "select state, step, error from platform.moves where tenant_id = $1 order by created_at desc limit 1",
      [tenantId],
    );
    if (move !== undefined && move.state !== "running") {
      return move;
    }
    if (Date.now() > deadline) {
      throw new Error(`the move of ${tenantId} is still under way`);
    }
    await sleep(100);
  }
}

/** The tenant's databases on a server, with whether they take connections. */
function databasesOf(server: { sql: TestMesh["sql"] }, tenantId: string): Promise<{ datname: string; datallowconn: boolean }[]> {
  return server.sql("postgres", "select datname, datallowconn from pg_database where datname like $1 order by datname", [`tenant\\_${tenantId.replaceAll("-", "\\_")}%`]);
}

/** Replication slots and subscriptions named after moves, on a server. */
async function replicationOf(server: { sql: TestMesh["sql"] }): Promise<string[]> {
  const rows = await server.sql<{ name: string }>(
    "postgres",
    "select slot_name as name from pg_replication_slots where slot_name like 'tenantry_move_%' union all select subname from pg_subscription where subname like 'tenantry_move_%'",
  );
  return rows.map((r) => r.name);
}

const modes = [
  { mode: MoveMode.ONLINE, steps: moveSteps.online },
  { mode: MoveMode.COPY_UNDER_FREEZE, steps: moveSteps.copy_under_freeze },
];

for (const { mode, steps } of modes) {
  describe(`a move ${MoveMode[mode].toLowerCase().replaceAll("_", " ")} after a kill -9`, () => {
    // Points inside steps too: the initial copy half done (online), the writes frozen for the cutover.
    const inside = (step: string) => (step === "copy-tables" ? ["copy-tables:copying", step] : step === "cutover" ? ["cutover:frozen", step] : [step]);
    for (const step of (steps as readonly string[]).flatMap(inside)) {
      it(`ends with the tenant served from the target alone, the source closed and no replication left, when Platform dies after "${step}"`, async () => {
        const { tenantId, database } = await mesh.createTenant({ tenantId: mesh.uniqueTenantId(step.replace(":", "-").slice(0, 12)), owner });
        for (const title of ["one", "two"]) {
          await mesh.entries.createEntry({ title }, headers(tenantId));
        }
        await crashAfter(`move:${step}`, (client) => client.moveTenant({ tenantId, targetCluster: "second", mode }, { timeoutMs: 30_000 }));
        expect(await settled(tenantId)).toMatchObject({ state: "succeeded", step: "close-source", error: null });
        const tenant = (await mesh.platformClient.getTenant({ tenantId })).tenant!;
        expect([tenant.status, tenant.cluster]).toEqual([TenantStatus.ACTIVE, "second"]);
        expect(await databasesOf(mesh, tenantId)).toEqual([{ datname: database, datallowconn: false }]);
        expect(await databasesOf(second, tenantId)).toEqual([{ datname: tenant.database, datallowconn: true }]);
        await retried(() => mesh.entries.createEntry({ title: "three" }, headers(tenantId)));
        const { entries } = await retried(() => mesh.entries.listEntries({}, headers(tenantId)));
        expect(entries.map((e) => e.title).sort()).toEqual(["one", "three", "two"]);
        expect(await retried(() => mesh.login(tenantId, owner))).toMatch(/^ey/);
        expect(await replicationOf(mesh)).toEqual([]);
        expect(await replicationOf(second)).toEqual([]);
      });
    }
  });
}

describe("a promotion of a pooled tenant after a kill -9", () => {
  const inside = (step: string) => (step === "copy-tables" ? ["copy-tables:copying", step] : step === "cutover" ? ["cutover:frozen", step] : [step]);
  for (const step of (moveSteps.online as readonly string[]).flatMap(inside)) {
    it(`ends with the tenant in a database of its own, nothing of it left in its pool database, when Platform dies after "${step}"`, async () => {
      const { tenantId, database: pool } = await mesh.createTenant({ tenantId: mesh.uniqueTenantId(`p-${step.replace(":", "-")}`.slice(0, 12)), owner, placement: Placement.POOLED });
      const prefix = `t_${tenantId.replaceAll("-", "_")}_`;
      for (const title of ["one", "two"]) {
        await mesh.entries.createEntry({ title }, headers(tenantId));
      }
      await crashAfter(`move:${step}`, (client) => client.moveTenant({ tenantId, targetCluster: "default", targetPlacement: Placement.DEDICATED }, { timeoutMs: 30_000 }));
      expect(await settled(tenantId)).toMatchObject({ state: "succeeded", step: "close-source", error: null });
      const tenant = (await mesh.platformClient.getTenant({ tenantId })).tenant!;
      expect([tenant.status, tenant.placement, tenant.cluster]).toEqual([TenantStatus.ACTIVE, Placement.DEDICATED, "default"]);
      expect(await databasesOf(mesh, tenantId)).toEqual([{ datname: tenant.database, datallowconn: true }]);
      await retried(() => mesh.entries.createEntry({ title: "three" }, headers(tenantId)));
      const { entries } = await retried(() => mesh.entries.listEntries({}, headers(tenantId)));
      expect(entries.map((e) => e.title).sort()).toEqual(["one", "three", "two"]);
      expect(await retried(() => mesh.login(tenantId, owner))).toMatch(/^ey/);
      expect(await mesh.sql(pool, "select nspname from pg_namespace where starts_with(nspname, $1)", [prefix])).toEqual([]);
      expect(await mesh.sql(pool, "select relname from pg_class where relname like 'tenantry\\_move\\_marker%' union all select pubname from pg_publication")).toEqual([]);
      expect(await replicationOf(mesh)).toEqual([]);
    });
  }
});

describe("a pooled tenant's move into another cluster's pool database after a kill -9", () => {
  const inside = (step: string) => (step === "copy-tables" ? ["copy-tables:copying", step] : step === "cutover" ? ["cutover:frozen", step] : [step]);
  for (const step of (moveSteps.online as readonly string[]).flatMap(inside)) {
    it(`ends with the tenant pooled on the other cluster under its prefix, nothing of it left in its source pool database, when Platform dies after "${step}"`, async () => {
      const tenantId = mesh.uniqueTenantId(`pp-${step.replace(":", "-")}`.slice(0, 12));
      const { tenant: created } = await mesh.platformClient.createTenant({ tenantId, displayName: tenantId, ownerEmail: owner.email, ownerPassword: owner.password, placement: Placement.POOLED, cluster: "default" });
      const pool = created!.database;
      const prefix = `t_${tenantId.replaceAll("-", "_")}_`;
      for (const title of ["one", "two"]) {
        await mesh.entries.createEntry({ title }, headers(tenantId));
      }
      await crashAfter(`move:${step}`, (client) => client.moveTenant({ tenantId, targetCluster: "second" }, { timeoutMs: 30_000 }));
      expect(await settled(tenantId)).toMatchObject({ state: "succeeded", step: "close-source", error: null });
      const tenant = (await mesh.platformClient.getTenant({ tenantId })).tenant!;
      expect([tenant.status, tenant.placement, tenant.cluster]).toEqual([TenantStatus.ACTIVE, Placement.POOLED, "second"]);
      expect(await second.sql(tenant.database, "select nspname from pg_namespace where starts_with(nspname, $1) order by 1", [prefix])).toEqual([{ nspname: `${prefix}auth` }, { nspname: `${prefix}backend` }]);
      await retried(() => mesh.entries.createEntry({ title: "three" }, headers(tenantId)));
      const { entries } = await retried(() => mesh.entries.listEntries({}, headers(tenantId)));
      expect(entries.map((e) => e.title).sort()).toEqual(["one", "three", "two"]);
      expect(await retried(() => mesh.login(tenantId, owner))).toMatch(/^ey/);
      expect(await mesh.sql(pool, "select nspname from pg_namespace where starts_with(nspname, $1)", [prefix])).toEqual([]);
      expect(await mesh.sql(pool, "select relname from pg_class where relname like 'tenantry\\_move\\_marker%' union all select pubname from pg_publication")).toEqual([]);
      expect(await second.sql(tenant.database, "select relname from pg_class where relname like 'tenantry\\_move\\_marker%'")).toEqual([]);
      expect(await replicationOf(mesh)).toEqual([]);
      expect(await replicationOf(second)).toEqual([]);
    });
  }
});

describe("a move into a pool database after a kill -9", () => {
  const inside = (step: string) => (step === "cutover" ? ["cutover:frozen", step] : [step]);
  for (const step of (moveSteps.copy_under_freeze as readonly string[]).flatMap(inside)) {
    it(`ends with the tenant in its pool database, its own database closed, when Platform dies after "${step}"`, async () => {
      const { tenantId, database } = await mesh.createTenant({ tenantId: mesh.uniqueTenantId(`d-${step.replace(":", "-")}`.slice(0, 12)), owner });
      for (const title of ["one", "two"]) {
        await mesh.entries.createEntry({ title }, headers(tenantId));
      }
      await crashAfter(`move:${step}`, (client) => client.moveTenant({ tenantId, targetCluster: "default", targetPlacement: Placement.POOLED }, { timeoutMs: 30_000 }));
      expect(await settled(tenantId)).toMatchObject({ state: "succeeded", step: "close-source", error: null });
      const tenant = (await mesh.platformClient.getTenant({ tenantId })).tenant!;
      expect([tenant.status, tenant.placement, tenant.cluster]).toEqual([TenantStatus.ACTIVE, Placement.POOLED, "default"]);
      expect(await databasesOf(mesh, tenantId)).toEqual([{ datname: database, datallowconn: false }]);
      await retried(() => mesh.entries.createEntry({ title: "three" }, headers(tenantId)));
      const { entries } = await retried(() => mesh.entries.listEntries({}, headers(tenantId)));
      expect(entries.map((e) => e.title).sort()).toEqual(["one", "three", "two"]);
      expect(await retried(() => mesh.login(tenantId, owner))).toMatch(/^ey/);
    });
  }
});

describe("a drain after a kill -9", () => {
  it("leaves its cluster DRAINING, its moves go on when Platform starts again, and the next call finishes the drain", async () => {
    const clusters = mesh.client("platform", ClusterService, [operatorCredentialInterceptor(mesh.operatorToken)]);
    const moves = mesh.client("platform", MoveService, [operatorCredentialInterceptor(mesh.operatorToken)]);
    // Every tenant the specs above moved is on "second"; two more join them with entries of their own.
    const joined: string[] = [];
    for (const prefix of ["drain-a", "drain-b"]) {
      const { tenantId } = await mesh.createTenant({ tenantId: mesh.uniqueTenantId(prefix), owner });
      await mesh.entries.createEntry({ title: `entry of ${tenantId}` }, headers(tenantId));
      await moves.moveTenant({ tenantId, targetCluster: "second", mode: MoveMode.COPY_UNDER_FREEZE });
      expect((await settled(tenantId)).state).toBe("succeeded");
      joined.push(tenantId);
    }
    const onSecond = async () => (await mesh.platformClient.listTenants({ pageSize: 500 })).tenants.filter((t) => t.cluster === "second").map((t) => t.tenantId);
    const draining = await onSecond();
    expect(draining).toEqual(expect.arrayContaining(joined));

    await crashAfter("move:subscribe", async (client) => {
      for await (const _event of client.drainCluster({ cluster: "second", targetCluster: "default", maxConcurrency: 2, mode: MoveMode.ONLINE })) {
        // Runs until Platform dies in the middle of its first online move.
      }
    });
    const listed = await clusters.listClusters({});
    expect(listed.clusters.find((c) => c.name === "second")?.state).toBe(ClusterState.DRAINING);

    const events: DrainEvent[] = [];
    for await (const event of moves.drainCluster({ cluster: "second", targetCluster: "default", maxConcurrency: 2 }, { timeoutMs: 120_000 })) {
      events.push(event.event);
      if (event.event === DrainEvent.FINISHED) {
        expect(event.totals).toMatchObject({ total: draining.length, failed: 0, left: 0, remaining: 0, moving: 0 });
      }
    }
    expect(events.at(-1)).toBe(DrainEvent.FINISHED);
    expect(await onSecond()).toEqual([]);
    for (const tenantId of draining) {
      expect(await settled(tenantId)).toMatchObject({ state: "succeeded", error: null });
    }
    for (const tenantId of joined) {
      const { entries } = await retried(() => mesh.entries.listEntries({}, headers(tenantId)));
      expect(entries.map((e) => e.title)).toEqual([`entry of ${tenantId}`]);
      await retried(() => mesh.entries.createEntry({ title: "after the drain" }, headers(tenantId)));
    }
    // Nothing of the tenants is left open on the drained server, and no replication anywhere.
    const open = await second.sql<{ datname: string }>("postgres", "select datname from pg_database where datname like 'tenant\\_%' and datallowconn");
    expect(open).toEqual([]);
    expect(await replicationOf(mesh)).toEqual([]);
    expect(await replicationOf(second)).toEqual([]);
  });
});

describe("replication a move left", () => {
  it("is found by its name and removed when Platform starts, unless its move is under way or its database is another registry's", async () => {
    const { database } = await mesh.createTenant({ tenantId: mesh.uniqueTenantId("leftover"), owner });
    const ours = `tenantry_move_${randomUUID().replaceAll("-", "")}`;
    // Another Platform (its own registry) sharing the server: its move's slot and subscription sit in a database this registry does not know.
    const theirs = `tenantry_move_${randomUUID().replaceAll("-", "")}`;
    // Theirs made first, so that the server lists it before ours and the pass has looked at it once ours is gone.
    await mesh.sql("postgres", "select pg_create_logical_replication_slot($1, 'pgoutput')", [theirs]);
    await mesh.sql(database, "select pg_create_logical_replication_slot($1, 'pgoutput')", [ours]);
    await mesh.sql(database, `create subscription ${ours} connection 'host=127.0.0.1 port=1 dbname=none' publication ${ours} with (connect = false)`);
    await second.sql("postgres", `create subscription ${theirs} connection 'host=127.0.0.1 port=1 dbname=none' publication ${theirs} with (connect = false)`);
    try {
      expect((await replicationOf(mesh)).sort()).toEqual([ours, ours, theirs].sort());
      expect(await replicationOf(second)).toEqual([theirs]);
      await mesh.restartPlatform();
      const deadline = Date.now() + 20_000;
      while ((await replicationOf(mesh)).includes(ours) && Date.now() < deadline) {
        await sleep(100);
      }
      // One pass over each cluster looks at every slot and subscription there: ours gone, theirs kept.
      expect(await replicationOf(mesh)).toEqual([theirs]);
      expect(await replicationOf(second)).toEqual([theirs]);
    } finally {
      await mesh.sql("postgres", `select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = $1`, [theirs]);
      await second.sql("postgres", `alter subscription ${theirs} set (slot_name = none)`).catch(() => undefined);
      await second.sql("postgres", `drop subscription if exists ${theirs}`);
    }
  });
});
