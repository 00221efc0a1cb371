import { Code, createClient } from "@connectrpc/connect";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TenantStatus } from "../../../gen/tenantry/platform/v1/platform_service_pb.js";
import { TenantSchemaService } from "../../../gen/tenantry/schema/v1/tenant_schema_service_pb.js";
import { migrations as backendMigrations } from "../../backend/migrations/index.ts";
import { createGrpcJsTransport } from "../../mesh/index.ts";
import { failure } from "../../testing/failure.ts";
import { startTestMesh, type TestMesh } from "../../testing/test-mesh.ts";

let mesh: TestMesh;
beforeAll(async () => {
  mesh = await startTestMesh();
});
afterAll(() => mesh?.stop());

/** Connects to a database as a role; resolves with the error code when refused. */
async function connectAs(route: { host: string; port: number; user: string; password: string }, database: string): Promise<string> {
  const client = new pg.Client({ host: route.host, port: route.port, user: route.user, password: route.password, database });
  try {
    await client.connect();
    await client.query("select 1");
    return "connected";
  } catch (error) {
    return (error as { code?: string }).code ?? String(error);
  } finally {
    await client.end().catch(() => undefined);
  }
}

describe("tenant credentials", () => {
  it("gives each tenant a login role that owns its database and schemas, and is no superuser", async () => {
    const tenant = await mesh.createTenant();
    const { route } = await mesh.platformMeshClient.resolveTenant({ tenantId: tenant.tenantId });
    expect(route!.user).toBe(tenant.database);
    const [role] = await mesh.sql<{ rolsuper: boolean; rolcreatedb: boolean; rolcreaterole: boolean }>(
      "postgres",
      "select rolsuper, rolcreatedb, rolcreaterole from pg_roles where rolname = $1",
      [route!.user],
    );
    expect(role).toEqual({ rolsuper: false, rolcreatedb: false, rolcreaterole: false });
    const owners = await mesh.sql<{ owner: string }>(
      tenant.database,
      `select nspowner::regrole::text as owner from pg_namespace where nspname in ('auth', 'backend')
       union all select tableowner from pg_tables where schemaname in ('auth', 'backend')
       union all select pg_get_userbyid(datdba) from pg_database where datname = current_database()`,
    );
    expect(owners.length).toBeGreaterThanOrEqual(4);
    expect(new Set(owners.map((o) => o.owner))).toEqual(new Set([route!.user]));
    expect(await connectAs(route!, tenant.database)).toBe("connected");
  });

  it("refuses a tenant's role on another tenant's database, and PUBLIC on every tenant database", async () => {
    const a = await mesh.createTenant();
    const b = await mesh.createTenant();
    const { route: routeA } = await mesh.platformMeshClient.resolveTenant({ tenantId: a.tenantId });
    expect(await connectAs(routeA!, b.database)).toBe("42501");
    const [grants] = await mesh.sql<{ public_connect: boolean }>(
      "postgres",
      "select coalesce(bool_or(acl.grantee = 0 and acl.privilege_type = 'CONNECT'), false) as public_connect from pg_database d, aclexplode(d.datacl) acl where d.datname = $1",
      [b.database],
    );
    expect(grants).toEqual({ public_connect: false });
  });

  it("keeps role passwords encrypted in the registry", async () => {
    const tenant = await mesh.createTenant();
    const { route } = await mesh.platformMeshClient.resolveTenant({ tenantId: tenant.tenantId });
    const [row] = await mesh.sql<{ sealed: Buffer }>(mesh.platformDatabase, "select role_password as sealed from platform.tenants where id = $1", [tenant.tenantId]);
    expect(row!.sealed.length).toBeGreaterThan(route!.password.length);
    expect(row!.sealed.includes(Buffer.from(route!.password))).toBe(false);
    const clusters = await mesh.sql<{ sealed: Buffer }>(mesh.platformDatabase, "select admin_password as sealed from platform.clusters");
    const superuserPassword = decodeURIComponent(new URL(mesh.databaseUrl("postgres")).password);
    for (const cluster of clusters) {
      expect(cluster.sealed.includes(Buffer.from(superuserPassword))).toBe(false);
    }
  });
});

describe("provisioning", () => {
  it("copies new databases from the cluster's template, which takes no connections", async () => {
    // The first tenant makes sure the template exists and is current.
    await mesh.createTenant();
    const [template] = await mesh.sql<{ datistemplate: boolean; datallowconn: boolean }>(
      "postgres",
      "select datistemplate, datallowconn from pg_database where datname = $1",
      [`${mesh.platformDatabase}_template`],
    );
    expect(template).toEqual({ datistemplate: true, datallowconn: false });
    const before = new Date();
    const tenant = await mesh.createTenant();
    // The migrations ran in the template, before this tenant existed: their rows came with the copy.
    const [migrations] = await mesh.sql<{ n: number; copied: boolean }>(
      tenant.database,
      "select count(*)::int as n, bool_and(executed_at < $1) as copied from backend.mikro_orm_migrations",
      [before],
    );
    expect(migrations).toEqual({ n: backendMigrations.length, copied: true });
    const { entry } = await mesh.entries.createEntry({ title: "in a copy" }, { headers: { "x-tenant-id": tenant.tenantId } });
    expect(entry?.title).toBe("in a copy");
  });

  it("reads a copied database's schema state from its migration table, as the service reports it", async () => {
    const tenant = await mesh.createTenant();
    const transport = createGrpcJsTransport({ address: `127.0.0.1:${mesh.backend.grpcPort}`, interceptors: [mesh.meshCredentials.clientInterceptor()] });
    try {
      const schema = createClient(TenantSchemaService, transport);
      const names = backendMigrations.map((m) => m.name);
      expect(await schema.getSchemaStatus({ tenantId: tenant.tenantId })).toMatchObject({ version: names.at(-1), latestVersion: names.at(-1), pending: [] });
      // Without its migration table the schema counts as never migrated.
      await mesh.sql(tenant.database, "drop table backend.mikro_orm_migrations");
      expect(await schema.getSchemaStatus({ tenantId: tenant.tenantId })).toMatchObject({ version: "", latestVersion: names.at(-1), pending: names });
    } finally {
      transport.close();
    }
  });

  it("falls back to migrating the new database when the template cannot be copied", async () => {
    await mesh.createTenant();
    // Take the template away behind Platform's back: its record still says it is current.
    await mesh.sql("postgres", `alter database ${pg.escapeIdentifier(`${mesh.platformDatabase}_template`)} with is_template false`);
    await mesh.sql("postgres", `drop database ${pg.escapeIdentifier(`${mesh.platformDatabase}_template`)}`);
    const started = new Date(Date.now() - 1000);
    const tenant = await mesh.createTenant();
    expect(tenant.status).toBe(TenantStatus.ACTIVE);
    const [{ fresh }] = (await mesh.sql<{ fresh: boolean }>(tenant.database, "select bool_and(executed_at >= $1) as fresh from backend.mikro_orm_migrations", [started])) as [
      { fresh: boolean },
    ];
    expect(fresh).toBe(true);
    const { entry } = await mesh.entries.createEntry({ title: "after fallback" }, { headers: { "x-tenant-id": tenant.tenantId } });
    expect(entry?.title).toBe("after fallback");
    // The template is rebuilt on the next refresh.
    await mesh.sql(mesh.platformDatabase, "update platform.clusters set template_versions = null");
    const next = await mesh.createTenant();
    expect(next.status).toBe(TenantStatus.ACTIVE);
    const [template] = await mesh.sql("postgres", "select datistemplate from pg_database where datname = $1", [`${mesh.platformDatabase}_template`]);
    expect(template).toEqual({ datistemplate: true });
  });

  it("answers the same request again with the same tenant, and refuses a different one", async () => {
    const tenantId = mesh.uniqueTenantId("again");
    const first = await mesh.platformClient.createTenant({ tenantId, displayName: "Again" });
    const second = await mesh.platformClient.createTenant({ tenantId, displayName: "Again" });
    expect(second.tenant).toEqual(first.tenant);
    const other = await failure(mesh.platformClient.createTenant({ tenantId, displayName: "Someone else" }));
    expect(other.code).toBe(Code.AlreadyExists);
  });

  it("leaves a database it did not create alone, fails, and succeeds on RetryProvisioning once the cause is gone", async () => {
    const tenantId = mesh.uniqueTenantId("squat");
    const database = `tenant_${tenantId.replaceAll("-", "_")}`;
    await mesh.sql("postgres", `create database ${pg.escapeIdentifier(database)}`);
    const error = await failure(mesh.platformClient.createTenant({ tenantId }));
    expect(error.code).toBe(Code.FailedPrecondition);
    expect(error.rawMessage).toMatch(/already exists .* belongs to "postgres"/);
    expect(await mesh.sql("postgres", "select 1 from pg_database where datname = $1", [database])).toHaveLength(1);
    expect(await mesh.sql("postgres", "select 1 from pg_roles where rolname = $1", [database])).toHaveLength(0);
    const { tenant: failed } = await mesh.platformClient.getTenant({ tenantId });
    expect(failed?.status).toBe(TenantStatus.FAILED);

    await mesh.sql("postgres", `drop database ${pg.escapeIdentifier(database)}`);
    const { tenant } = await mesh.platformClient.retryProvisioning({ tenantId });
    expect(tenant?.status).toBe(TenantStatus.ACTIVE);
    const { entry } = await mesh.entries.createEntry({ title: "retried" }, { headers: { "x-tenant-id": tenantId } });
    expect(entry?.title).toBe("retried");
    expect((await failure(mesh.platformClient.retryProvisioning({ tenantId }))).code).toBe(Code.FailedPrecondition);
    expect((await failure(mesh.platformClient.retryProvisioning({ tenantId: mesh.uniqueTenantId("ghost") }))).code).toBe(Code.NotFound);
  });

  it("provisions concurrent requests for different tenants, and one tenant for concurrent identical requests", async () => {
    const ids = Array.from({ length: 6 }, () => mesh.uniqueTenantId("burst"));
    const results = await Promise.all([...ids, ids[0]!, ids[0]!].map((tenantId) => mesh.platformClient.createTenant({ tenantId })));
    expect(results.every((r) => r.tenant?.status === TenantStatus.ACTIVE)).toBe(true);
    const rows = await mesh.sql<{ n: number }>("postgres", "select count(*)::int as n from pg_database where datname = any($1)", [
      ids.map((id) => `tenant_${id.replaceAll("-", "_")}`),
    ]);
    expect(rows[0]!.n).toBe(6);
  });
});
