import { Code } from "@connectrpc/connect";
import { Migration } from "@mikro-orm/migrations";
import { setTimeout } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TenantStatus, Tier } from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import { migrations as authMigrations } from "../auth/migrations/index.ts";
import { migrations as backendMigrations } from "../backend/migrations/index.ts";
import { port, readConfig, startTenantService, tenantServiceEnv } from "../mesh/index.ts";
import { registry } from "../registry.ts";
import { failure } from "../testing/failure.ts";
import { startTestMesh, type ServiceUnderTest, type TestMesh } from "../testing/test-mesh.ts";

let mesh: TestMesh;
beforeAll(async () => {
  mesh = await startTestMesh();
});
afterAll(() => mesh?.stop());

describe("platform service", () => {
  it("provisions a tenant: its database, every service's schema, the versions reported, then ACTIVE", async () => {
    const tenantId = mesh.uniqueTenantId("acme");
    const { tenant } = await mesh.platformClient.createTenant({ tenantId, displayName: "Acme Inc.", tier: Tier.PREMIUM });
    expect(tenant).toMatchObject({ tenantId, displayName: "Acme Inc.", tier: Tier.PREMIUM, status: TenantStatus.ACTIVE, database: `tenant_${tenantId.replaceAll("-", "_")}` });

    const owners = registry.flatMap((s) => (s.schema === undefined ? [] : [s.schema])).sort();
    const schemas = await mesh.sql<{ nspname: string }>(tenant!.database, "select nspname from pg_namespace where nspname = any($1) order by 1", [owners]);
    expect(schemas.map((r) => r.nspname)).toEqual(owners);
    const ledger = await mesh.sql<{ service: string; version: string }>(
      mesh.platformDatabase,
      "select service, version from platform.tenant_schema_versions where tenant_id = $1 order by service",
      [tenantId],
    );
    expect(ledger.map((r) => r.service)).toEqual(owners);
    expect(ledger).toContainEqual({ service: "auth", version: authMigrations.at(-1)!.name });
    expect(ledger).toContainEqual({ service: "backend", version: backendMigrations.at(-1)!.name });
    const { route } = await mesh.platformMeshClient.resolveTenant({ tenantId });
    expect(route).toMatchObject({ tenantId, status: TenantStatus.ACTIVE, database: tenant!.database });
  });

  it("refuses a taken id with ALREADY_EXISTS and leaves the first tenant as it was", async () => {
    const tenant = await mesh.createTenant();
    const error = await failure(mesh.platformClient.createTenant({ tenantId: tenant.tenantId, displayName: "other" }));
    expect(error.code).toBe(Code.AlreadyExists);
    const { tenant: again } = await mesh.platformClient.getTenant({ tenantId: tenant.tenantId });
    expect(again).toMatchObject({ displayName: tenant.displayName, status: TenantStatus.ACTIVE });
  });

  it("validates the request", async () => {
    expect((await failure(mesh.platformClient.createTenant({ tenantId: "" }))).code).toBe(Code.InvalidArgument);
    expect((await failure(mesh.platformClient.createTenant({ tenantId: "UPPER" }))).code).toBe(Code.InvalidArgument);
    expect((await failure(mesh.platformClient.createTenant({ tenantId: mesh.uniqueTenantId(), tier: 99 as Tier }))).code).toBe(Code.InvalidArgument);
    expect((await failure(mesh.platformClient.createTenant({ tenantId: mesh.uniqueTenantId(), displayName: "x".repeat(201) }))).code).toBe(Code.InvalidArgument);
    expect((await failure(mesh.platformClient.getTenant({ tenantId: mesh.uniqueTenantId("ghost") }))).code).toBe(Code.NotFound);
    expect((await failure(mesh.platformMeshClient.resolveTenant({ tenantId: mesh.uniqueTenantId("ghost") }))).code).toBe(Code.NotFound);
  });

  it("never lets a tenant id like SQL reach the database", async () => {
    const created = await failure(mesh.platformClient.createTenant({ tenantId: "x'; drop table platform.tenants; --" }));
    expect(created.code).toBe(Code.InvalidArgument);
    const tables = await mesh.sql("postgres", "select datname from pg_database where datname like '%drop%'");
    expect(tables).toEqual([]);
  });

  it("lists tenants by id, page by page", async () => {
    for (let i = 0; i < 3; i++) {
      await mesh.createTenant();
    }
    const all: string[] = [];
    let pageToken = "";
    do {
      const page = await mesh.platformClient.listTenants({ pageSize: 2, pageToken });
      expect(page.tenants.length).toBeLessThanOrEqual(2);
      all.push(...page.tenants.map((t) => t.tenantId));
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    expect(all.length).toBeGreaterThanOrEqual(3);
    expect([...all].sort()).toEqual(all);
    expect(new Set(all).size).toBe(all.length);
  });
});

/** A service that is not registered: it owns schema `ledger`, with one table. */
class CreatePostings extends Migration {
  override up(): void {
    this.addSql("create schema if not exists ledger");
    this.addSql("create table ledger.postings (id uuid primary key, amount bigint not null)");
  }
}
const ledger: ServiceUnderTest = {
  name: "ledger",
  schema: "ledger",
  start: (env, log, telemetry) =>
    startTenantService({
      name: "ledger",
      entities: [],
      migrations: [{ name: "0001-create-postings", class: CreatePostings }],
      services: () => [],
      config: readConfig({ ...tenantServiceEnv, TENANTRY_GRPC_PORT: port, TENANTRY_HTTP_PORT: port }, env),
      log,
      telemetry,
    }),
};

describe("a service under test, not registered", () => {
  let withLedger: TestMesh;
  beforeAll(async () => {
    withLedger = await startTestMesh({ serviceUnderTest: ledger });
  });
  afterAll(() => withLedger?.stop());

  it("has its schema migrated on every new tenant, as a registered service has", async () => {
    const tenant = await withLedger.createTenant();
    const tables = await withLedger.sql(tenant.database, "select tablename from pg_tables where schemaname = 'ledger' and tablename = 'postings'");
    expect(tables).toHaveLength(1);
    const versions = await withLedger.sql(withLedger.platformDatabase, "select service, version from platform.tenant_schema_versions where tenant_id = $1 order by 1", [tenant.tenantId]);
    expect(versions).toContainEqual({ service: "ledger", version: "0001-create-postings" });
  });

  it("when it cannot be reached, leaves a new tenant FAILED with the error, never ACTIVE, and no database behind", async () => {
    await withLedger.stopService("ledger");
    // A Platform started since has no version of it to go by: it must ask.
    await withLedger.restartPlatform();
    const tenantId = withLedger.uniqueTenantId("doomed");
    const error = await failure(withLedger.platformClient.createTenant({ tenantId }));
    expect(error.code).toBe(Code.Unavailable);
    expect(error.rawMessage).toMatch(/ledger/);
    const { tenant } = await withLedger.platformClient.getTenant({ tenantId });
    expect(tenant?.status).toBe(TenantStatus.FAILED);
    expect(tenant?.error).toMatch(/ledger/);
    const databases = await withLedger.sql("postgres", "select datname from pg_database where datname = $1", [tenant!.database]);
    expect(databases).toEqual([]);
    const calls = await failure(withLedger.entries.listEntries({}, { headers: { "x-tenant-id": tenantId } }));
    expect(calls.code).toBe(Code.FailedPrecondition);
  });

  it("when it is back, is asked at once: a tenant created the moment it listens again is ACTIVE", async () => {
    // Down long enough for Platform's channel to it to back off to the longest wait between attempts.
    await withLedger.stopService("ledger");
    await withLedger.restartPlatform();
    await failure(withLedger.platformClient.createTenant({ tenantId: withLedger.uniqueTenantId("early") }));
    await setTimeout(6000);
    await withLedger.restartService("ledger");
    const tenant = await withLedger.createTenant({ tenantId: withLedger.uniqueTenantId("back") });
    expect(tenant.status).toBe(TenantStatus.ACTIVE);
  });
});
