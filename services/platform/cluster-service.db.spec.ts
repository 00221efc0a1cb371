import { Code, createClient } from "@connectrpc/connect";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ClusterService, ClusterState } from "../../gen/tenantry/platform/v1/cluster_service_pb.js";
import { Placement } from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import { createGrpcJsTransport, operatorCredentialInterceptor, startEmbeddedDatabase, type EmbeddedDatabase, type GrpcJsTransport } from "../mesh/index.ts";
import { freePort } from "../testing/free-port.ts";
import { failure } from "../testing/failure.ts";
import { startTestMesh, type TestMesh } from "../testing/test-mesh.ts";

let mesh: TestMesh;
let second: EmbeddedDatabase;
let secondDir: string;
let transport: GrpcJsTransport;
let clusters: ReturnType<typeof createClient<typeof ClusterService>>;
let secondPassword: string;

beforeAll(async () => {
  secondDir = await mkdtemp(path.join(os.tmpdir(), "tenantry-second-"));
  [mesh, second] = await Promise.all([startTestMesh(), startEmbeddedDatabase({ dir: secondDir, port: await freePort(), ephemeral: true })]);
  secondPassword = decodeURIComponent(new URL(second.url).password);
  transport = createGrpcJsTransport({ address: `127.0.0.1:${mesh.platform.grpcPort}`, interceptors: [operatorCredentialInterceptor(mesh.operatorToken)] });
  clusters = createClient(ClusterService, transport);
});
afterAll(async () => {
  transport?.close();
  await mesh?.stop();
  await second?.stop();
  await rm(secondDir, { recursive: true, force: true });
});

async function onSecond<R extends pg.QueryResultRow>(database: string, text: string, values?: unknown[]): Promise<R[]> {
  const client = new pg.Client({ connectionString: second.urlFor(database) });
  await client.connect();
  try {
    return (await client.query<R>(text, values)).rows;
  } finally {
    await client.end();
  }
}

function registerSecond(settings: { capacity: number; poolCapacity?: number; state?: ClusterState; region?: string }) {
  return clusters.registerCluster({
    name: "second",
    host: "127.0.0.1",
    port: second.port,
    adminUser: "postgres",
    adminPassword: secondPassword,
    region: settings.region ?? "eu",
    capacity: settings.capacity,
    poolCapacity: settings.poolCapacity ?? 0,
    state: settings.state ?? ClusterState.ACCEPTING,
  });
}

describe("clusters", () => {
  it("registers the first server as cluster default", async () => {
    const { clusters: listed } = await clusters.listClusters({});
    expect(listed.map((c) => c.name)).toEqual(["default"]);
    expect(listed[0]).toMatchObject({ region: "local", state: ClusterState.ACCEPTING, adminUser: "postgres" });
  });

  it("checks a cluster before registering it", async () => {
    const base = { name: "second", host: "127.0.0.1", port: second.port, adminUser: "postgres", adminPassword: secondPassword, capacity: 5, region: "eu" };
    expect((await failure(clusters.registerCluster({ ...base, name: "Bad Name" }))).code).toBe(Code.InvalidArgument);
    expect((await failure(clusters.registerCluster({ ...base, capacity: 0 }))).code).toBe(Code.InvalidArgument);
    const wrongPassword = await failure(clusters.registerCluster({ ...base, adminPassword: "wrong" }));
    expect(wrongPassword.code).toBe(Code.FailedPrecondition);
    expect(wrongPassword.rawMessage).toMatch(/cannot connect/);
    await onSecond("postgres", "create role weakling login password 'weak-password'");
    const weak = await failure(clusters.registerCluster({ ...base, adminUser: "weakling", adminPassword: "weak-password" }));
    expect(weak.code).toBe(Code.FailedPrecondition);
    expect(weak.rawMessage).toMatch(/CREATEDB and CREATEROLE/);
    const { clusters: listed } = await clusters.listClusters({});
    expect(listed.map((c) => c.name)).toEqual(["default"]);
  });

  it("places tenants on the cluster or region asked for, else where there is most room, within capacity", async () => {
    const { cluster } = await registerSecond({ capacity: 2 });
    expect(cluster).toMatchObject({ name: "second", region: "eu", capacity: 2, tenantCount: 0, state: ClusterState.ACCEPTING });

    const inEu = await mesh.platformClient.createTenant({ tenantId: mesh.uniqueTenantId("eu"), region: "eu" });
    expect(inEu.tenant?.cluster).toBe("second");
    const anywhere = await mesh.platformClient.createTenant({ tenantId: mesh.uniqueTenantId("any") });
    expect(anywhere.tenant?.cluster).toBe("default");
    const pinned = await mesh.platformClient.createTenant({ tenantId: mesh.uniqueTenantId("pinned"), cluster: "second" });
    expect(pinned.tenant?.cluster).toBe("second");

    // Full.
    expect((await failure(mesh.platformClient.createTenant({ tenantId: mesh.uniqueTenantId("full"), cluster: "second" }))).code).toBe(Code.ResourceExhausted);
    expect((await failure(mesh.platformClient.createTenant({ tenantId: mesh.uniqueTenantId("full"), region: "eu" }))).code).toBe(Code.ResourceExhausted);
    // Draining.
    await registerSecond({ capacity: 10, state: ClusterState.DRAINING });
    expect((await failure(mesh.platformClient.createTenant({ tenantId: mesh.uniqueTenantId("drain"), cluster: "second" }))).code).toBe(Code.FailedPrecondition);
    expect((await failure(mesh.platformClient.createTenant({ tenantId: mesh.uniqueTenantId("drain"), region: "eu" }))).code).toBe(Code.FailedPrecondition);
    expect((await failure(mesh.platformClient.createTenant({ tenantId: mesh.uniqueTenantId("nowhere"), cluster: "nowhere" }))).code).toBe(Code.InvalidArgument);
    // Most room.
    await registerSecond({ capacity: 100_000 });
    const roomy = await mesh.platformClient.createTenant({ tenantId: mesh.uniqueTenantId("roomy") });
    expect(roomy.tenant?.cluster).toBe("second");

    const { clusters: listed } = await clusters.listClusters({});
    expect(listed.find((c) => c.name === "second")?.tenantCount).toBe(3);
  });

  it("counts pooled tenants against the pool capacity, apart from the dedicated ones' capacity", async () => {
    // Full for dedicated tenants (its 3 above), room for one pooled tenant.
    expect((await registerSecond({ capacity: 3, poolCapacity: 1 })).cluster).toMatchObject({ capacity: 3, poolCapacity: 1, tenantCount: 3, pooledTenantCount: 0 });
    const pooled = await mesh.platformClient.createTenant({ tenantId: mesh.uniqueTenantId("pooled"), cluster: "second", placement: Placement.POOLED });
    expect(pooled.tenant).toMatchObject({ cluster: "second", placement: Placement.POOLED });
    const dedicated = await failure(mesh.platformClient.createTenant({ tenantId: mesh.uniqueTenantId("full"), cluster: "second", placement: Placement.DEDICATED }));
    expect(dedicated.code).toBe(Code.ResourceExhausted);
    const another = await failure(mesh.platformClient.createTenant({ tenantId: mesh.uniqueTenantId("full"), cluster: "second", placement: Placement.POOLED }));
    expect([another.code, another.rawMessage]).toEqual([Code.ResourceExhausted, 'cluster "second" is full; raise its pool capacity (pooled tenants) or register another cluster']);
    // Registered again without a pool capacity: it keeps the one it has.
    await registerSecond({ capacity: 100_000 });
    const { clusters: listed } = await clusters.listClusters({});
    expect(listed.find((c) => c.name === "second")).toMatchObject({ capacity: 100_000, poolCapacity: 1, tenantCount: 3, pooledTenantCount: 1 });
  });

  it("keeps each tenant's database on its own cluster, served by Backend and closed to other tenants' roles", async () => {
    const a = (await mesh.platformClient.createTenant({ tenantId: mesh.uniqueTenantId("a"), cluster: "second" })).tenant!;
    const b = (await mesh.platformClient.createTenant({ tenantId: mesh.uniqueTenantId("b"), cluster: "second" })).tenant!;
    const onDefault = (await mesh.platformClient.createTenant({ tenantId: mesh.uniqueTenantId("d"), cluster: "default" })).tenant!;

    expect(await onSecond("postgres", "select datname from pg_database where datname = any($1) order by 1", [[a.database, b.database, onDefault.database]])).toEqual(
      [a.database, b.database].sort().map((datname) => ({ datname })),
    );
    expect(await mesh.sql("postgres", "select 1 from pg_database where datname = $1", [a.database])).toEqual([]);
    const { route } = await mesh.platformMeshClient.resolveTenant({ tenantId: a.tenantId });
    expect(route).toMatchObject({ host: "127.0.0.1", port: second.port, database: a.database, user: a.database });

    const { entry } = await mesh.entries.createEntry({ title: "on the second cluster" }, { headers: { "x-tenant-id": a.tenantId } });
    expect(await onSecond(a.database, "select title from backend.entries where id = $1", [entry!.id])).toEqual([{ title: "on the second cluster" }]);
    await mesh.entries.createEntry({ title: "on the first" }, { headers: { "x-tenant-id": onDefault.tenantId } });

    const intruder = new pg.Client({ host: "127.0.0.1", port: second.port, user: route!.user, password: route!.password, database: b.database });
    const refused = await intruder.connect().then(() => "connected", (error: { code?: string }) => error.code);
    await intruder.end().catch(() => undefined);
    expect(refused).toBe("42501");
    // The second cluster has its own template, made by the first copy there.
    expect(await onSecond("postgres", "select datistemplate, datallowconn from pg_database where datname = $1", [`${mesh.platformDatabase}_template`])).toEqual([
      { datistemplate: true, datallowconn: false },
    ]);
  });
});
