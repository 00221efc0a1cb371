import { createClient } from "@connectrpc/connect";
import pg from "pg";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ClusterService } from "../../../gen/tenantry/platform/v1/cluster_service_pb.js";
import { FleetService, type MigrateTenantsResponse } from "../../../gen/tenantry/platform/v1/fleet_service_pb.js";
import { MoveService } from "../../../gen/tenantry/platform/v1/move_service_pb.js";
import { TenantStatus, type Tenant } from "../../../gen/tenantry/platform/v1/platform_service_pb.js";
import { createGrpcJsTransport, operatorCredentialInterceptor, type GrpcJsTransport } from "../../mesh/index.ts";
import { newerBackendMigrations, upcomingBackendVersion } from "../../testing/newer-backend.ts";
import { startSecondServer, type SecondServer } from "../../testing/second-server.ts";
import { startTestMesh, type TestMesh } from "../../testing/test-mesh.ts";

const size = 2;
let mesh: TestMesh;
let second: SecondServer;
let transport: GrpcJsTransport;
let stockPrefix: string;

beforeAll(async () => {
  // Sweeps every half second, so that the stock follows a deploy within the specs' patience.
  [mesh, second] = await Promise.all([
    startTestMesh({ services: ["auth", "backend"], platformEnv: { TENANTRY_DATABASE_STOCK: String(size), TENANTRY_OFFBOARDING_CHECK_INTERVAL_MS: "500" } }),
    startSecondServer(),
  ]);
  transport = createGrpcJsTransport({ address: `127.0.0.1:${mesh.platform.grpcPort}`, interceptors: [operatorCredentialInterceptor(mesh.operatorToken)] });
  stockPrefix = `${mesh.platformDatabase}_stock_`;
});
afterAll(async () => {
  transport?.close();
  await mesh?.stop();
  await second?.stop();
});

interface StockDatabase {
  oid: number;
  name: string;
  owner: string;
  open: boolean;
  acl: string | null;
  /** Not being built (its name then ends with _b). */
  built: boolean;
}

/** The stock databases on a server (the tests' shared one unless `on` is given). */
async function stockOn(sql: TestMesh["sql"] = mesh.sql): Promise<StockDatabase[]> {
  return sql<StockDatabase>(
    "postgres",
    `select oid::int, datname as name, pg_get_userbyid(datdba) as owner, datallowconn as open, datacl::text as acl, datname !~ '_b$' as built
     from pg_database where starts_with(datname, $1) order by datname`,
    [stockPrefix],
  );
}

/** Waits until a server holds `count` ready stock databases (closed to connections) and no other. */
async function stockOf(count: number, sql: TestMesh["sql"] = mesh.sql): Promise<StockDatabase[]> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const stock = await stockOn(sql);
    if (stock.length === count && stock.every((s) => !s.open && s.built)) {
      return stock;
    }
    if (Date.now() > deadline) {
      throw new Error(`expected ${count} stock databases, found ${JSON.stringify(stock)}`);
    }
    await sleep(50);
  }
}

const databaseOid = async (tenant: Tenant) => (await mesh.sql<{ oid: number }>("postgres", "select oid::int from pg_database where datname = $1", [tenant.database]))[0]!.oid;

/** Connects to a database as a role; resolves with the error code when refused. */
async function connectAs(login: { host: string; port: number; user: string; password: string }, database: string): Promise<string> {
  const client = new pg.Client({ ...login, database });
  client.on("error", () => {});
  try {
    await client.connect();
    return "connected";
  } catch (error) {
    return (error as { code?: string }).code ?? String(error);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * Who owns what in a tenant's database and who may do what with it: the
 * database, every schema, relation, function and type outside the system's,
 * default privileges and the roles objects depend on, with the tenant's
 * role written <tenant>.
 */
async function ownership(tenant: Tenant): Promise<unknown> {
  const queries = {
    database: `select pg_get_userbyid(datdba) as owner, datacl::text as acl, datallowconn, datistemplate, datconnlimit, encoding, datcollate, datctype
               from pg_database where datname = current_database()`,
    schemas: `select nspname, pg_get_userbyid(nspowner) as owner, nspacl::text as acl from pg_namespace
              where nspname !~ '^pg_' and nspname <> 'information_schema' order by 1`,
    relations: `select n.nspname, c.relname, c.relkind, pg_get_userbyid(c.relowner) as owner, c.relacl::text as acl
                from pg_class c join pg_namespace n on n.oid = c.relnamespace
                where n.nspname !~ '^pg_' and n.nspname <> 'information_schema' order by 1, 2`,
    functions: `select n.nspname, p.proname, pg_get_userbyid(p.proowner) as owner, p.proacl::text as acl
                from pg_proc p join pg_namespace n on n.oid = p.pronamespace
                where n.nspname !~ '^pg_' and n.nspname <> 'information_schema' order by 1, 2`,
    types: `select n.nspname, t.typname, pg_get_userbyid(t.typowner) as owner, t.typacl::text as acl
            from pg_type t join pg_namespace n on n.oid = t.typnamespace
            where n.nspname !~ '^pg_' and n.nspname <> 'information_schema' order by 1, 2`,
    defaultPrivileges: `select pg_get_userbyid(defaclrole) as role, defaclnamespace::regnamespace::text as schema, defaclobjtype, defaclacl::text as acl
                        from pg_default_acl order by 1, 2, 3`,
    dependencies: `select classid::regclass::text as catalog, deptype, pg_get_userbyid(refobjid) as role, count(*)::int as n
                   from pg_shdepend where dbid = (select oid from pg_database where datname = current_database()) group by 1, 2, 3 order by 1, 2, 3`,
  };
  const found: Record<string, unknown> = {};
  for (const [what, query] of Object.entries(queries)) {
    found[what] = await mesh.sql(tenant.database, query);
  }
  return JSON.parse(JSON.stringify(found).replaceAll(tenant.database, "<tenant>"));
}

describe("the database stock", () => {
  it("keeps ready databases that belong to the admin, grant PUBLIC nothing and refuse every login", async () => {
    const stock = await stockOf(size);
    const tenant = await mesh.createTenant();
    const { route } = await mesh.platformMeshClient.resolveTenant({ tenantId: tenant.tenantId });
    const login = { host: route!.host, port: route!.port, user: route!.user, password: route!.password };
    for (const database of await stockOf(size)) {
      expect(database).toMatchObject({ owner: "postgres", open: false, acl: "{postgres=CTc/postgres}", built: true });
      // Not accepting connections (55000), whoever asks.
      expect(await connectAs(login, database.name)).toBe("55000");
      const superuser = new URL(mesh.databaseUrl(database.name));
      const admin = { host: superuser.hostname, port: Number(superuser.port), user: decodeURIComponent(superuser.username), password: decodeURIComponent(superuser.password) };
      expect(await connectAs(admin, database.name)).toBe("55000");
    }
    expect(stock.length).toBe(size);
  });

  it("gives a new tenant a stock database, owned by its role as a copy of the template is, and refills the stock", async () => {
    const stock = await stockOf(size);
    const taken = await mesh.createTenant();
    expect(taken.status).toBe(TenantStatus.ACTIVE);
    expect(stock.map((s) => s.oid)).toContain(await databaseOid(taken));
    // The stock is full again, of other databases.
    const refilled = await stockOf(size);
    expect(refilled.filter((s) => stock.every((old) => old.oid !== s.oid))).toHaveLength(1);

    // The same tenant by the template's path.
    await mesh.restartPlatform({ TENANTRY_DATABASE_STOCK: "0" });
    await stockOf(0);
    const copied = await mesh.createTenant();
    expect(copied.status).toBe(TenantStatus.ACTIVE);
    await mesh.restartPlatform();
    await stockOf(size);

    const [fromStock, fromTemplate] = [await ownership(taken), await ownership(copied)];
    expect(fromStock).toEqual(fromTemplate);
    // Everything is the tenant's: the template's role owns nothing there and the admin only what PostgreSQL gives it.
    expect(JSON.stringify(fromStock)).not.toContain(`${mesh.platformDatabase}_template`);
    expect((fromStock as { relations: { owner: string }[] }).relations.every((r) => r.owner === "<tenant>")).toBe(true);
    const { entry } = await mesh.entries.createEntry({ title: "in a stock database" }, { headers: { "x-tenant-id": taken.tenantId } });
    expect(entry?.title).toBe("in a stock database");
  });

  it("never hands one stock database to two tenants provisioned at once; those left without copy the template", async () => {
    const stock = await stockOf(size);
    const tenants = (await Promise.all(Array.from({ length: 5 }, () => mesh.platformClient.createTenant({ tenantId: mesh.uniqueTenantId("rush") })))).map(
      (r) => r.tenant!,
    );
    expect(tenants.every((t) => t.status === TenantStatus.ACTIVE)).toBe(true);
    const oids = await Promise.all(tenants.map(databaseOid));
    expect(new Set(oids).size).toBe(tenants.length);
    // Both stock databases were taken (refills wait for the provisionings under way), once each.
    expect(oids.filter((oid) => stock.some((s) => s.oid === oid)).sort()).toEqual(stock.map((s) => s.oid).sort());
    await stockOf(size);
  });

  it("undoes a provisioning that fails after taking a stock database: the database is dropped with the role, the tenant FAILED", async () => {
    const stock = await stockOf(size);
    // Spoil the stock while Platform is down: Auth cannot bootstrap a tenant without its table of users' roles.
    await mesh.stopPlatform();
    for (const { name } of stock) {
      await mesh.sql("postgres", `alter database ${pg.escapeIdentifier(name)} with allow_connections true`);
      await mesh.sql(name, "drop table auth.user_roles");
      await mesh.sql("postgres", `alter database ${pg.escapeIdentifier(name)} with allow_connections false`);
      await mesh.sql("postgres", "select pg_terminate_backend(pid) from pg_stat_activity where datname = $1", [name]);
    }
    await mesh.restartPlatform();
    const tenantId = mesh.uniqueTenantId("spoilt");
    await expect(mesh.platformClient.createTenant({ tenantId })).rejects.toThrow(/provisioning tenant .* failed/);
    const { tenant } = await mesh.platformClient.getTenant({ tenantId });
    expect(tenant).toMatchObject({ status: TenantStatus.FAILED, error: expect.stringMatching(/auth could not bootstrap/) });
    const database = tenant!.database;
    expect(await mesh.sql("postgres", "select 1 from pg_database where datname = $1 or oid = $2", [database, stock[0]!.oid])).toEqual([]);
    expect(await mesh.sql("postgres", "select 1 from pg_roles where rolname = $1", [database])).toEqual([]);
    // The other spoilt one goes; the stock is built again.
    await mesh.stopPlatform();
    await mesh.sql("postgres", `drop database if exists ${pg.escapeIdentifier(stock[1]!.name)}`);
    await mesh.restartPlatform();
    await stockOf(size);
  });

  it("drops what a refill left half-built", async () => {
    const stock = await stockOf(size);
    const halfBuilt = `${stock[0]!.name}_b`;
    await mesh.sql("postgres", `create database ${pg.escapeIdentifier(halfBuilt)} allow_connections false`);
    const deadline = Date.now() + 30_000;
    while ((await mesh.sql("postgres", "select 1 from pg_database where datname = $1", [halfBuilt])).length > 0) {
      expect(Date.now()).toBeLessThan(deadline);
      await sleep(50);
    }
    expect((await stockOf(size)).map((s) => s.oid)).toEqual(stock.map((s) => s.oid));
  });

  it("shows no stock database as a tenant: not listed, not counted, not migrated by the fleet", async () => {
    await stockOf(size);
    const { tenants } = await mesh.platformClient.listTenants({ pageSize: 1000 });
    expect(tenants.every((t) => !t.database.startsWith(stockPrefix) && !t.tenantId.includes("stock"))).toBe(true);
    const fleet = createClient(FleetService, transport);
    const { services } = await fleet.getFleetStatus({});
    const active = tenants.filter((t) => t.status === TenantStatus.ACTIVE).length;
    for (const service of services) {
      expect(service.current + service.behind + service.failed).toBe(active);
    }
  });

  it("follows a deploy with a new migration: the stock is rebuilt at the new versions, and a tenant taking it ends current", async () => {
    const before = await stockOf(size);
    await mesh.restartBackend(newerBackendMigrations);
    // The sweep sees the new version once Platform's answer from the services is stale (a few seconds).
    const deadline = Date.now() + 60_000;
    let after = await stockOn();
    while (!(after.length === size && after.every((s) => !s.open && s.built && before.every((old) => old.name !== s.name)))) {
      expect(Date.now()).toBeLessThan(deadline);
      await sleep(100);
      after = await stockOn();
    }
    for (const database of after) {
      expect(database.name.slice(0, -9)).not.toBe(before[0]!.name.slice(0, -9));
    }
    const tenant = await mesh.createTenant();
    expect(after.map((s) => s.oid)).toContain(await databaseOid(tenant));
    expect(await mesh.sql(tenant.database, "select 1 from backend.mikro_orm_migrations where name = $1", [upcomingBackendVersion])).toHaveLength(1);
    const ledger = await mesh.sql(mesh.platformDatabase, "select version from platform.tenant_schema_versions where tenant_id = $1 and service = 'backend'", [tenant.tenantId]);
    expect(ledger).toEqual([{ version: upcomingBackendVersion }]);
    // The fleet's rollout names tenants only.
    const events: MigrateTenantsResponse[] = [];
    for await (const event of createClient(FleetService, transport).migrateTenants({})) {
      events.push(event);
    }
    const { tenants } = await mesh.platformClient.listTenants({ pageSize: 1000 });
    expect(events.length).toBeGreaterThan(0);
    expect(events.every((e) => tenants.some((t) => t.tenantId === e.tenantId))).toBe(true);
  });

  it("builds a stock on every accepting cluster, and drops it from a cluster being drained", async () => {
    await createClient(ClusterService, transport).registerCluster(second.registration("second"));
    await stockOf(size, second.sql);
    await stockOf(size);
    for await (const event of createClient(MoveService, transport).drainCluster({ cluster: "second" })) {
      expect(event.tenantId).toBe("");
    }
    await stockOf(0, second.sql);
    // The other cluster keeps its own.
    expect(await stockOn()).toHaveLength(size);
  });
});
