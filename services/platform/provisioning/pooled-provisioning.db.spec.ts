import { Code, ConnectError } from "@connectrpc/connect";
import { Migration } from "@mikro-orm/migrations";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FleetService, MigrationOutcome } from "../../../gen/tenantry/platform/v1/fleet_service_pb.js";
import { BackupService, BackupState } from "../../../gen/tenantry/platform/v1/backup_service_pb.js";
import { MoveService } from "../../../gen/tenantry/platform/v1/move_service_pb.js";
import { Placement, TenantStatus } from "../../../gen/tenantry/platform/v1/platform_service_pb.js";
import { operatorCredentialInterceptor } from "../../mesh/index.ts";
import { registry } from "../../registry.ts";
import { newerBackendMigrations, upcomingBackendVersion } from "../../testing/newer-backend.ts";
import { startTestMesh, type TestMesh } from "../../testing/test-mesh.ts";

let mesh: TestMesh;
beforeAll(async () => {
  // Two pooled tenants to a pool database, so that a third one opens another.
  // Offboarded tenants are purged at once.
  mesh = await startTestMesh({ platformEnv: { TENANTRY_POOL_MAX_TENANTS: "2", TENANTRY_DATABASE_STOCK: "0", TENANTRY_OFFBOARDING_GRACE_MS: "0" } });
});
afterAll(() => mesh?.stop());

const headers = (tenantId: string) => ({ headers: { "x-tenant-id": tenantId } });

/** The services that own a schema in every tenant's data, by name. */
const schemaOwners = registry.flatMap((s) => (s.schema === undefined ? [] : [s.schema])).sort();

describe("pooled tenants provisioned by Platform", () => {
  it("get a NOLOGIN role and a schema per service in a pool database, and their route logs in as the pool's role", async () => {
    const tenant = await mesh.createTenant({ placement: Placement.POOLED });
    expect(tenant.status).toBe(TenantStatus.ACTIVE);
    expect(tenant.placement).toBe(Placement.POOLED);
    expect(tenant.database).toBe(`${mesh.platformDatabase}_pool_1`);
    const prefix = `t_${tenant.tenantId.replaceAll("-", "_")}_`;
    const role = `tenant_${tenant.tenantId.replaceAll("-", "_")}`;
    const [login] = await mesh.sql<{ rolcanlogin: boolean }>("postgres", "select rolcanlogin from pg_roles where rolname = $1", [role]);
    expect(login?.rolcanlogin).toBe(false);
    const schemas = await mesh.sql(tenant.database, "select nspname, pg_get_userbyid(nspowner) as owner from pg_namespace where starts_with(nspname, $1) order by 1", [prefix]);
    expect(schemas).toEqual(schemaOwners.map((service) => ({ nspname: prefix + service, owner: role })));
    const ledger = await mesh.sql(mesh.platformDatabase, "select service from platform.tenant_schema_versions where tenant_id = $1 order by 1", [tenant.tenantId]);
    expect(ledger).toEqual(schemaOwners.map((service) => ({ service })));

    const { route } = await mesh.platformMeshClient.resolveTenant({ tenantId: tenant.tenantId });
    expect(route).toMatchObject({ placement: Placement.POOLED, sessionRole: role, schemaPrefix: prefix, database: tenant.database, user: tenant.database });
    const { tenant: got } = await mesh.platformClient.getTenant({ tenantId: tenant.tenantId });
    expect(got?.placement).toBe(Placement.POOLED);
  });

  it("serve Login (Auth) and entries (Backend), each tenant seeing only its own rows", async () => {
    const owner = { email: "owner@example.com", password: "a long password" };
    const a = await mesh.createTenant({ placement: Placement.POOLED, owner });
    const b = await mesh.createTenant({ placement: Placement.POOLED, owner });
    expect(await mesh.login(a.tenantId, owner)).not.toBe("");
    expect(await mesh.login(b.tenantId, owner)).not.toBe("");
    await mesh.entries.createEntry({ title: "a's entry" }, headers(a.tenantId));
    await mesh.entries.createEntry({ title: "b's entry" }, headers(b.tenantId));
    const titles = async (tenantId: string) => (await mesh.entries.listEntries({}, headers(tenantId))).entries.map((e) => e.title);
    expect(await titles(a.tenantId)).toEqual(["a's entry"]);
    expect(await titles(b.tenantId)).toEqual(["b's entry"]);
  });

  it("fill a pool database to TENANTRY_POOL_MAX_TENANTS, then open another", async () => {
    const first = await mesh.createTenant({ placement: Placement.POOLED });
    const second = await mesh.createTenant({ placement: Placement.POOLED });
    const counts = await mesh.sql<{ database: string; n: number }>(
      mesh.platformDatabase,
      "select database, count(*)::int as n from platform.tenants where placement = 'pooled' and status = 'active' group by database order by database",
    );
    expect(counts.every((c) => c.n <= 2)).toBe(true);
    expect(new Set([first.database, second.database]).size).toBe(2);
    const pools = await mesh.sql<{ name: string; state: string }>(mesh.platformDatabase, "select name, state from platform.pool_databases order by name");
    expect(pools.map((p) => p.state)).toEqual(pools.map(() => "ready"));
    expect(pools.map((p) => p.name)).toEqual(counts.map((c) => c.database));
  });

  it("cannot reach another pooled tenant's tables in the same pool database, even through the pool's login", async () => {
    // Pool databases fill first: of three new tenants, two share one.
    const made = [await mesh.createTenant({ placement: Placement.POOLED }), await mesh.createTenant({ placement: Placement.POOLED }), await mesh.createTenant({ placement: Placement.POOLED })];
    const [a, b] = made.filter((t) => made.filter((u) => u.database === t.database).length === 2);
    expect(b!.database).toBe(a!.database);
    await mesh.entries.createEntry({ title: "b's secret" }, headers(b!.tenantId));
    const { route } = await mesh.platformMeshClient.resolveTenant({ tenantId: a!.tenantId });
    const client = new pg.Client({ host: route!.host, port: route!.port, database: route!.database, user: route!.user, password: route!.password });
    await client.connect();
    try {
      const bBackend = pg.escapeIdentifier(`t_${b!.tenantId.replaceAll("-", "_")}_backend`);
      // The pool's login alone (NOINHERIT) has no rights on any tenant's schema.
      await expect(client.query(`select title from ${bBackend}.entries`)).rejects.toMatchObject({ code: "42501" });
      await client.query(`set role ${pg.escapeIdentifier(route!.sessionRole)}`);
      await expect(client.query(`select title from ${bBackend}.entries`)).rejects.toMatchObject({ code: "42501" });
      // Nor may a tenant make schemas, or write to public.
      await expect(client.query("create schema stray")).rejects.toMatchObject({ code: "42501" });
      await expect(client.query("create table public.stray (id int)")).rejects.toMatchObject({ code: "42501" });
    } finally {
      await client.end();
    }
  });

  it("live beside dedicated tenants, each placement serving its own", async () => {
    const pooled = await mesh.createTenant({ placement: Placement.POOLED });
    const dedicated = await mesh.createTenant();
    expect(dedicated.placement).toBe(Placement.DEDICATED);
    expect(dedicated.database).toBe(`tenant_${dedicated.tenantId.replaceAll("-", "_")}`);
    const { route } = await mesh.platformMeshClient.resolveTenant({ tenantId: dedicated.tenantId });
    expect(route).toMatchObject({ placement: Placement.DEDICATED, sessionRole: "", schemaPrefix: "", user: dedicated.database });
    await mesh.entries.createEntry({ title: "pooled" }, headers(pooled.tenantId));
    await mesh.entries.createEntry({ title: "dedicated" }, headers(dedicated.tenantId));
    expect((await mesh.entries.listEntries({}, headers(pooled.tenantId))).entries.map((e) => e.title)).toEqual(["pooled"]);
    expect((await mesh.entries.listEntries({}, headers(dedicated.tenantId))).entries.map((e) => e.title)).toEqual(["dedicated"]);
  });

  it("are backed up, and refused moves, FAILED_PRECONDITION, with nothing made", async () => {
    const tenant = await mesh.createTenant({ placement: Placement.POOLED });
    const operator = [operatorCredentialInterceptor(mesh.operatorToken)];
    const { backup } = await mesh.client("platform", BackupService, operator).createBackup({ tenantId: tenant.tenantId });
    expect(backup?.state).toBe(BackupState.SUCCEEDED);
    const move = await mesh.client("platform", MoveService, operator).moveTenant({ tenantId: tenant.tenantId, targetCluster: tenant.cluster }).then(() => undefined, (e: unknown) => ConnectError.from(e));
    expect(move?.code).toBe(Code.FailedPrecondition);
    expect(move?.rawMessage).toMatch(/is pooled on cluster "default" already: name the pool database to move it to \(target_pool_database\), or move it to another cluster, or to a database of its own \(target_placement PLACEMENT_DEDICATED\)/);
  });

  it("are suspended and resumed as any tenant: refused while SUSPENDED, served again after", async () => {
    const tenant = await mesh.createTenant({ placement: Placement.POOLED });
    await mesh.entries.createEntry({ title: "before" }, headers(tenant.tenantId));
    await mesh.platformClient.suspendTenant({ tenantId: tenant.tenantId, reason: "unpaid invoice" });
    const refused = await mesh.entries.listEntries({}, headers(tenant.tenantId)).then(() => undefined, (e: unknown) => ConnectError.from(e));
    expect(refused?.code).toBe(Code.FailedPrecondition);
    await mesh.platformClient.resumeTenant({ tenantId: tenant.tenantId });
    expect((await mesh.entries.listEntries({}, headers(tenant.tenantId))).entries.map((e) => e.title)).toEqual(["before"]);
  });

  it("are offboarded with their schemas and role dropped, their pool database and its other tenants untouched", async () => {
    const made = [await mesh.createTenant({ placement: Placement.POOLED }), await mesh.createTenant({ placement: Placement.POOLED }), await mesh.createTenant({ placement: Placement.POOLED })];
    const [gone, kept] = made.filter((t) => made.filter((u) => u.database === t.database).length === 2) as [typeof made[number], typeof made[number]];
    await mesh.entries.createEntry({ title: "kept's entry" }, headers(kept.tenantId));
    await mesh.entries.createEntry({ title: "gone's entry" }, headers(gone.tenantId));
    const { tenant: deleted } = await mesh.platformClient.deleteTenant({ tenantId: gone.tenantId });
    expect(deleted?.status).toBe(TenantStatus.DELETED);
    const role = `tenant_${gone.tenantId.replaceAll("-", "_")}`;
    expect(await mesh.sql("postgres", "select 1 from pg_roles where rolname = $1", [role])).toEqual([]);
    expect(await mesh.sql(gone.database, "select nspname from pg_namespace where starts_with(nspname, $1)", [`t_${gone.tenantId.replaceAll("-", "_")}_`])).toEqual([]);
    const refused = await mesh.entries.listEntries({}, headers(gone.tenantId)).then(() => undefined, (e: unknown) => ConnectError.from(e));
    expect(refused).toBeDefined();
    expect((await mesh.entries.listEntries({}, headers(kept.tenantId))).entries.map((e) => e.title)).toEqual(["kept's entry"]);
    expect(await mesh.sql("postgres", "select 1 from pg_database where datname = $1", [gone.database])).toHaveLength(1);
  });

  it("are provisioned though the pool's login is refused the tenant's role at first: Platform grants it again and asks the services again", async () => {
    const tenantId = mesh.uniqueTenantId("regrant");
    const role = `tenant_${tenantId.replaceAll("-", "_")}`;
    let revoked = 0;
    await mesh.restartPlatform(
      {},
      {
        afterStep: async (id, step) => {
          if (id === tenantId && step === "create-role") {
            // What a lease meets while the grant is not seen: SET ROLE refused (42501), which the services answer UNAVAILABLE.
            const [pool] = await mesh.sql<{ database: string }>(mesh.platformDatabase, "select database from platform.tenants where id = $1", [tenantId]);
            await mesh.sql("postgres", `revoke ${role} from ${pool!.database}`);
            revoked++;
          }
        },
      },
    );
    const tenant = await mesh.createTenant({ tenantId, placement: Placement.POOLED });
    expect([revoked, tenant.status]).toEqual([1, TenantStatus.ACTIVE]);
    const granted = await mesh.sql("postgres", "select 1 from pg_auth_members where roleid = $1::regrole and member = $2::regrole", [role, tenant.database]);
    expect(granted).toHaveLength(1);
    await mesh.entries.createEntry({ title: "granted again" }, headers(tenantId));
    expect((await mesh.entries.listEntries({}, headers(tenantId))).entries.map((e) => e.title)).toEqual(["granted again"]);
  });

  // Last: it leaves the mesh running a newer Backend.
  it("are reached by fleet migrations: Backend migrates each pooled tenant's schema, and the ledger follows", async () => {
    const pooled = await mesh.createTenant({ placement: Placement.POOLED });
    const dedicated = await mesh.createTenant();
    await mesh.restartBackend(newerBackendMigrations);
    const fleet = mesh.client("platform", FleetService, [operatorCredentialInterceptor(mesh.operatorToken)]);
    const events = [];
    for await (const event of fleet.migrateTenants({ tenantIds: [pooled.tenantId, dedicated.tenantId] })) {
      events.push(event);
    }
    expect(events.filter((e) => e.service === "backend").map((e) => [e.tenantId, MigrationOutcome[e.outcome], e.applied]).sort()).toEqual(
      [
        [pooled.tenantId, "MIGRATED", [upcomingBackendVersion]],
        [dedicated.tenantId, "MIGRATED", [upcomingBackendVersion]],
      ].sort(),
    );
    const index = await mesh.sql(pooled.database, "select schemaname from pg_indexes where indexname = 'entries_created_at' and schemaname = $1", [
      `t_${pooled.tenantId.replaceAll("-", "_")}_backend`,
    ]);
    expect(index).toHaveLength(1);
    const ledger = await mesh.sql(mesh.platformDatabase, "select version from platform.tenant_schema_versions where tenant_id = $1 and service = 'backend'", [pooled.tenantId]);
    expect(ledger).toEqual([{ version: upcomingBackendVersion }]);
    await mesh.entries.createEntry({ title: "after the rollout" }, headers(pooled.tenantId));
  });

  // After the one above: it runs a Backend newer still.
  it("are migrated by fleet migrations several at once in one pool database, beyond concurrency_per_cluster", async () => {
    // Two pooled tenants to a pool database: of three new ones, at least two share one.
    const made = [await mesh.createTenant({ placement: Placement.POOLED }), await mesh.createTenant({ placement: Placement.POOLED }), await mesh.createTenant({ placement: Placement.POOLED })];
    const [a, b] = made.filter((t) => made.filter((u) => u.database === t.database).length === 2);
    expect(a!.database).toBe(b!.database);
    /** Records, in the tenant's schema, when its migration began and ended, a moment apart. */
    class RecordMigrationWindow extends Migration {
      override up(): void {
        this.addSql("create table migration_window (began timestamptz not null, ended timestamptz)");
        this.addSql("insert into migration_window (began) values (clock_timestamp())");
        this.addSql("select pg_sleep(0.5)");
        this.addSql("update migration_window set ended = clock_timestamp()");
      }
    }
    await mesh.restartBackend([...newerBackendMigrations, { name: `${String(newerBackendMigrations.length + 1).padStart(4, "0")}-record-migration-window`, class: RecordMigrationWindow }]);
    const fleet = mesh.client("platform", FleetService, [operatorCredentialInterceptor(mesh.operatorToken)]);
    const outcomes = [];
    for await (const event of fleet.migrateTenants({ tenantIds: [a!.tenantId, b!.tenantId], concurrencyPerCluster: 1 })) {
      outcomes.push(`${event.tenantId} ${event.service} ${MigrationOutcome[event.outcome]}`);
    }
    expect(outcomes.filter((o) => o.includes(" backend ")).sort()).toEqual([`${a!.tenantId} backend MIGRATED`, `${b!.tenantId} backend MIGRATED`].sort());
    const windowOf = async (tenantId: string) =>
      (await mesh.sql<{ began: Date; ended: Date }>(a!.database, `select began, ended from ${`t_${tenantId.replaceAll("-", "_")}_backend`}.migration_window`))[0]!;
    const [first, second] = [await windowOf(a!.tenantId), await windowOf(b!.tenantId)];
    // One began before the other ended: they were migrated at the same time, though one at a time was asked per cluster.
    expect(first.began < second.ended && second.began < first.ended).toBe(true);
  });
});
