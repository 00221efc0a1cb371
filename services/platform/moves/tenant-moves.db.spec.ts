import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { Migration } from "@mikro-orm/migrations";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ClusterService, ClusterState } from "../../../gen/tenantry/platform/v1/cluster_service_pb.js";
import { MoveMode, MoveState } from "../../../gen/tenantry/platform/v1/move_pb.js";
import { MoveService } from "../../../gen/tenantry/platform/v1/move_service_pb.js";
import { TenantStatus } from "../../../gen/tenantry/platform/v1/platform_service_pb.js";
import { migrations as backendMigrations } from "../../backend/migrations/index.ts";
import { operatorCredentialInterceptor } from "../../mesh/index.ts";
import { failure } from "../../testing/failure.ts";
import { startSecondServer, type SecondServer } from "../../testing/second-server.ts";
import { startTestMesh, type TestMesh } from "../../testing/test-mesh.ts";

const owner = { email: "owner@example.com", password: "correct horse battery" };
const headers = (tenantId: string) => ({ headers: { "x-tenant-id": tenantId } });

/** A table with a sequence in Backend's schema, which no released migration makes: moves must carry its sequence. */
class AddTicketCounter extends Migration {
  override up(): void {
    this.addSql("create table backend.tickets (number bigserial primary key, note text not null)");
  }
}
const migrationsWithSequence = [...backendMigrations, { name: "0002-add-ticket-counter", class: AddTicketCounter }];

let mesh: TestMesh;
let second: SecondServer;
let moves: Client<typeof MoveService>;
let clusters: Client<typeof ClusterService>;

beforeAll(async () => {
  [mesh, second] = await Promise.all([startTestMesh({ services: ["auth", "backend"] }), startSecondServer()]);
  await mesh.restartBackend(migrationsWithSequence);
  const operator = [operatorCredentialInterceptor(mesh.operatorToken)];
  moves = mesh.client("platform", MoveService, operator);
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

/** The tenant's entry titles as Backend serves them (retrying while a stale route meets the closed source). */
async function titles(tenantId: string): Promise<string[]> {
  for (let attempt = 0; ; attempt++) {
    try {
      const { entries } = await mesh.entries.listEntries({ pageSize: 500 }, headers(tenantId));
      return entries.map((e) => e.title).sort();
    } catch (error) {
      if (ConnectError.from(error).code !== Code.Unavailable || attempt > 50) {
        throw error;
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

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
  it("says of each cluster whether tenants can be moved from and to it online", async () => {
    const { clusters: listed } = await clusters.listClusters({});
    expect(listed.map((c) => [c.name, c.onlineMoveSource, c.onlineMoveTarget, c.onlineMoveNote])).toEqual([
      ["default", true, true, ""],
      ["second", true, true, ""],
    ]);
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
    await mesh.entries.createEntry({ title: "after the move" }, headers(tenantId));
    expect(await mesh.login(tenantId, owner)).toMatch(/^ey/);
    expect(await sqlOn("default", "postgres", "select datallowconn from pg_database where datname = $1", [database])).toEqual([{ datallowconn: false }]);
    await second.sql(move!.targetDatabase, "insert into backend.tickets (note) values ('after the move')");
    expect(await second.sql(move!.targetDatabase, "select number::int from backend.tickets order by number")).toEqual([1, 2, 3, 4, 5, 6].map((number) => ({ number })));
  });
});

describe("an online move", () => {
  it("copies the tenant while it is served, switches its route, and leaves no replication behind", async () => {
    const { tenantId, database } = await populatedTenant("online");
    const { move } = await moves.moveTenant({ tenantId, targetCluster: "second", mode: MoveMode.ONLINE });
    expect(move).toMatchObject({ state: MoveState.SUCCEEDED, mode: MoveMode.ONLINE, step: "close-source", sourceDatabase: database });
    expect(move!.tableCount).toBeGreaterThan(0);
    expect(move!.tablesCopied).toBe(move!.tableCount);
    const tenant = (await mesh.platformClient.getTenant({ tenantId })).tenant!;
    expect([tenant.cluster, tenant.database]).toEqual(["second", move!.targetDatabase]);
    expect(await titles(tenantId)).toEqual(["first", "second", "third"]);
    expect(await mesh.login(tenantId, owner)).toMatch(/^ey/);
    expect(await replicationLeftovers("default")).toEqual([]);
    expect(await replicationLeftovers("second")).toEqual([]);
    await second.sql(move!.targetDatabase, "insert into backend.tickets (note) values ('after the move')");
    expect(await second.sql(move!.targetDatabase, "select number::int from backend.tickets order by number")).toEqual([1, 2, 3, 4, 5, 6].map((number) => ({ number })));
    expect(await second.sql(move!.targetDatabase, "select to_regclass('public.tenantry_move_marker') as marker")).toEqual([{ marker: null }]);
  });
});

describe("moves refused", () => {
  it("refuses before making anything: an unknown, draining, full or own cluster, a tenant not ACTIVE", async () => {
    const { tenantId } = await populatedTenant("refused");
    expect((await failure(moves.moveTenant({ tenantId, targetCluster: "nowhere" }))).code).toBe(Code.NotFound);
    expect((await failure(moves.moveTenant({ tenantId, targetCluster: "default" }))).code).toBe(Code.InvalidArgument);
    expect((await failure(moves.moveTenant({ tenantId, targetCluster: "" }))).code).toBe(Code.InvalidArgument);
    await clusters.registerCluster(second.registration("draining", { state: ClusterState.DRAINING }));
    expect((await failure(moves.moveTenant({ tenantId, targetCluster: "draining" }))).code).toBe(Code.FailedPrecondition);
    await clusters.registerCluster(second.registration("tiny", { capacity: 1 }));
    await mesh.platformClient.createTenant({ tenantId: mesh.uniqueTenantId("filler"), cluster: "tiny" });
    expect((await failure(moves.moveTenant({ tenantId, targetCluster: "tiny" }))).code).toBe(Code.ResourceExhausted);
    await mesh.platformClient.suspendTenant({ tenantId });
    expect((await failure(moves.moveTenant({ tenantId, targetCluster: "second" }))).code).toBe(Code.FailedPrecondition);
    const { moves: made } = await moves.listMoves({ tenantId });
    expect(made).toEqual([]);
    expect(await second.sql("postgres", "select datname from pg_database where datname like $1", [`tenant\\_${tenantId.replaceAll("-", "\\_")}%`])).toEqual([]);
  });
});
