import { Code, createClient } from "@connectrpc/connect";
import { createHash } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Placement, PlatformService, TenantStatus, type Tenant } from "../gen/tenantry/platform/v1/platform_service_pb.js";
import { pooledProvisioningSteps, pooledRollbackSteps, provisioningSteps, rollbackSteps } from "../services/platform/provisioning/index.ts";
import { registry } from "../services/registry.ts";
import { callAndCrash } from "../services/testing/platform-crash.ts";
import { startTestMesh, type TestMesh } from "../services/testing/test-mesh.ts";

let mesh: TestMesh;
beforeAll(async () => {
  // With a stock of ready databases and of pooled slots, as by default: the runs below take one.
  mesh = await startTestMesh({ platformEnv: { TENANTRY_DATABASE_STOCK: "2", TENANTRY_POOLED_STOCK: "2" } });
  await mesh.createTenant();
  // The pool database the pooled runs below use, and so its stock of slots.
  await mesh.createTenant({ placement: Placement.POOLED });
});

/** The oids of the stock's ready databases once there are two. */
async function readyStock(): Promise<number[]> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const rows = await mesh.sql<{ oid: number }>("postgres", "select oid::int from pg_database where starts_with(datname, $1) and datname !~ '_b$' and not datallowconn", [`${mesh.platformDatabase}_stock_`]);
    if (rows.length === 2) {
      return rows.map((r) => r.oid);
    }
    if (Date.now() > deadline) {
      throw new Error(`the stock holds ${rows.length} ready databases, not 2`);
    }
    await sleep(50);
  }
}
afterAll(() => mesh?.stop());

/** Has a Platform that kills itself right after `step` create `tenantId`, and checks that it died there. */
async function createTenantAndCrash(tenantId: string, step: string, env: Record<string, string> = {}, placement = Placement.UNSPECIFIED): Promise<void> {
  const { error, signal, reaped } = await callAndCrash(mesh, step, (transport) => createClient(PlatformService, transport).createTenant({ tenantId, placement }, { timeoutMs: 20_000 }), env);
  expect(signal, `Platform should have been killed after ${step}`).toBe("SIGKILL");
  expect(reaped, `Platform did not kill itself after ${step}`).toBe(false);
  // The activate step is recorded with its work, so the call may have been answered already.
  if (step !== "activate") {
    expect(error?.code).toBe(Code.Unavailable);
  }
}

/** Waits until the restarted Platform has finished with the tenant. */
async function settled(tenantId: string): Promise<Tenant> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const { tenant } = await mesh.platformClient.getTenant({ tenantId });
    if (tenant!.status !== TenantStatus.PROVISIONING) {
      return tenant!;
    }
    if (Date.now() > deadline) {
      throw new Error(`tenant ${tenantId} is still provisioning`);
    }
    await sleep(100);
  }
}

async function leftovers(tenantId: string): Promise<{ databases: number; roles: number }> {
  const name = `tenant_${tenantId.replaceAll("-", "_")}`;
  const [databases] = await mesh.sql<{ n: number }>("postgres", "select count(*)::int as n from pg_database where datname = $1", [name]);
  const [roles] = await mesh.sql<{ n: number }>("postgres", "select count(*)::int as n from pg_roles where rolname = $1", [name]);
  return { databases: databases!.n, roles: roles!.n };
}

/** The services that own a schema in every tenant database, by name (their schemas' names). */
const schemaOwners = registry.flatMap((s) => (s.schema === undefined ? [] : [s.schema])).sort();

describe("provisioning after a kill -9", () => {
  for (const step of provisioningSteps) {
    it(`ends ACTIVE, with its role, database (from the stock), schemas and ledger, when Platform dies after "${step}" and starts again`, async () => {
      const stock = await readyStock();
      const tenantId = mesh.uniqueTenantId(step);
      await createTenantAndCrash(tenantId, step);
      await mesh.restartPlatform();
      const tenant = await settled(tenantId);
      expect(tenant.status).toBe(TenantStatus.ACTIVE);
      expect(await leftovers(tenantId)).toEqual({ databases: 1, roles: 1 });
      const [database] = await mesh.sql<{ oid: number; owner: string }>("postgres", "select oid::int, pg_get_userbyid(datdba) as owner from pg_database where datname = $1", [tenant.database]);
      expect(stock).toContain(database!.oid);
      expect(database!.owner).toBe(tenant.database);
      // The other one is still in the stock, whole: no stock database is left half-taken.
      const left = await mesh.sql<{ oid: number }>("postgres", "select oid::int from pg_database where oid = any($1) and starts_with(datname, $2) and not datallowconn and datdba = (select oid from pg_roles where rolname = current_user)", [
        stock,
        `${mesh.platformDatabase}_stock_`,
      ]);
      expect(left.map((r) => r.oid)).toEqual(stock.filter((oid) => oid !== database!.oid));
      const schemas = await mesh.sql(tenant.database, "select nspname from pg_namespace where nspname = any($1) order by 1", [schemaOwners]);
      expect(schemas).toEqual(schemaOwners.map((nspname) => ({ nspname })));
      const ledger = await mesh.sql(mesh.platformDatabase, "select service from platform.tenant_schema_versions where tenant_id = $1 order by 1", [tenantId]);
      expect(ledger).toEqual(schemaOwners.map((service) => ({ service })));
      const { entry } = await mesh.entries.createEntry({ title: `survived ${step}` }, { headers: { "x-tenant-id": tenantId } });
      expect(entry?.title).toBe(`survived ${step}`);
    });
  }

  for (const step of rollbackSteps) {
    it(`ends FAILED with nothing left behind when Platform dies after rollback step "${step}"`, async () => {
      // A schema service that cannot be reached makes provisioning fail once the
      // role and the database exist (without a template, at migrate-schemas), and roll back.
      const broken = {
        TENANTRY_SCHEMA_SERVICES: `${mesh.platformProcessEnv.TENANTRY_SCHEMA_SERVICES},ledger=127.0.0.1:1`,
        TENANTRY_TEMPLATE_DATABASES: "false",
      };
      const tenantId = mesh.uniqueTenantId(step);
      await createTenantAndCrash(tenantId, step, broken);
      await mesh.restartPlatform(broken);
      const tenant = await settled(tenantId);
      expect(tenant.status).toBe(TenantStatus.FAILED);
      expect(tenant.error).toMatch(/ledger/);
      expect(await leftovers(tenantId)).toEqual({ databases: 0, roles: 0 });
      const ledger = await mesh.sql(mesh.platformDatabase, "select 1 from platform.tenant_schema_versions where tenant_id = $1", [tenantId]);
      expect(ledger).toEqual([]);
    });
  }

  it("restarts cleanly with the usual settings afterwards", async () => {
    await mesh.restartPlatform();
    const tenant = await mesh.createTenant();
    expect(tenant.status).toBe(TenantStatus.ACTIVE);
  });
});

/** The slot roles of the pool database's stock that are ready (not being built), by oid. */
async function readySlots(pool: string): Promise<{ oid: number; role: string }[]> {
  const prefix = `slot_${createHash("sha256").update(pool).digest("hex").slice(0, 8)}_`;
  return mesh.sql("postgres", "select oid::int, rolname as role from pg_roles where starts_with(rolname, $1) and rolname !~ '_b$' order by 1", [prefix]);
}

/** The pool database's ready slots once there are two. */
async function twoSlots(pool: string): Promise<{ oid: number; role: string }[]> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const slots = await readySlots(pool);
    if (slots.length === 2) {
      return slots;
    }
    if (Date.now() > deadline) {
      throw new Error(`the pooled stock holds ${slots.length} ready slots, not 2`);
    }
    await sleep(50);
  }
}

/** How a role is granted to the pool's login (taken on with SET ROLE only), and whether it logs in. */
async function grantToPool(pool: string, role: string): Promise<unknown> {
  const [grant] = await mesh.sql(
    "postgres",
    "select r.rolcanlogin as login, m.inherit_option as inherit, m.set_option as set from pg_roles r join pg_auth_members m on m.roleid = r.oid where r.rolname = $1 and m.member = (select oid from pg_roles where rolname = $2)",
    [role, pool],
  );
  return grant;
}

/** A slot is whole: its role NOLOGIN, granted to the pool's login for SET ROLE only, owning one schema per service. */
async function expectWholeSlot(pool: string, role: string): Promise<void> {
  expect(await grantToPool(pool, role)).toEqual({ login: false, inherit: false, set: true });
  const schemas = await mesh.sql<{ nspname: string }>(pool, "select nspname from pg_namespace where nspowner = (select oid from pg_roles where rolname = $1) order by 1", [role]);
  expect(schemas.map((s) => s.nspname.replace(/^s_[0-9a-f]{8}_/, ""))).toEqual(schemaOwners);
}

/** A pooled tenant's schemas in its pool database, by name, with their owners. */
function pooledSchemas(tenantId: string, database: string): Promise<{ nspname: string; owner: string }[]> {
  return mesh.sql(database, "select nspname, pg_get_userbyid(nspowner) as owner from pg_namespace where starts_with(nspname, $1) order by 1", [`t_${tenantId.replaceAll("-", "_")}_`]);
}

describe("provisioning a pooled tenant after a kill -9", () => {
  /** The pooled tenants left FAILED below. */
  const failed: string[] = [];
  for (const step of pooledProvisioningSteps) {
    it(`ends ACTIVE, with its role and schemas (a slot of the stock), pool database and ledger, when Platform dies after "${step}" and starts again`, async () => {
      const [pool] = await mesh.sql<{ name: string }>(mesh.platformDatabase, "select name from platform.pool_databases");
      const slots = await twoSlots(pool!.name);
      const tenantId = mesh.uniqueTenantId(`p-${step}`);
      await createTenantAndCrash(tenantId, step, {}, Placement.POOLED);
      await mesh.restartPlatform();
      const tenant = await settled(tenantId);
      expect(tenant.status).toBe(TenantStatus.ACTIVE);
      expect(tenant.placement).toBe(Placement.POOLED);
      // Its role, and no database of its own.
      expect(await leftovers(tenantId)).toEqual({ databases: 0, roles: 1 });
      const role = `tenant_${tenantId.replaceAll("-", "_")}`;
      const prefix = `t_${tenantId.replaceAll("-", "_")}_`;
      expect(await pooledSchemas(tenantId, tenant.database)).toEqual(schemaOwners.map((service) => ({ nspname: prefix + service, owner: role })));
      const pools = await mesh.sql(mesh.platformDatabase, "select name, state from platform.pool_databases order by name");
      expect(pools).toEqual([{ name: tenant.database, state: "ready" }]);
      // Its role is a slot of the stock, renamed with its grant to the pool's login; the other slot is still in the stock, whole.
      const [taken] = await mesh.sql<{ oid: number }>("postgres", "select oid::int from pg_roles where rolname = $1", [role]);
      expect(slots.map((s) => s.oid)).toContain(taken!.oid);
      expect(await grantToPool(tenant.database, role)).toEqual({ login: false, inherit: false, set: true });
      const other = slots.find((s) => s.oid !== taken!.oid)!;
      expect((await readySlots(tenant.database)).map((s) => s.oid)).toContain(other.oid);
      await expectWholeSlot(tenant.database, other.role);
      const ledger = await mesh.sql(mesh.platformDatabase, "select service from platform.tenant_schema_versions where tenant_id = $1 order by 1", [tenantId]);
      expect(ledger).toEqual(schemaOwners.map((service) => ({ service })));
      const { entry } = await mesh.entries.createEntry({ title: `survived ${step}` }, { headers: { "x-tenant-id": tenantId } });
      expect(entry?.title).toBe(`survived ${step}`);
    });
  }

  for (const step of pooledRollbackSteps) {
    it(`ends FAILED with its schemas and role gone, the pool database kept, when Platform dies after rollback step "${step}"`, async () => {
      // A schema service that cannot be reached makes provisioning fail once the role and schemas exist, and roll back.
      const broken = { TENANTRY_SCHEMA_SERVICES: `${mesh.platformProcessEnv.TENANTRY_SCHEMA_SERVICES},ledger=127.0.0.1:1` };
      const tenantId = mesh.uniqueTenantId(`p-${step}`);
      await createTenantAndCrash(tenantId, step, broken, Placement.POOLED);
      await mesh.restartPlatform(broken);
      const tenant = await settled(tenantId);
      expect(tenant.status).toBe(TenantStatus.FAILED);
      expect(tenant.error).toMatch(/ledger/);
      failed.push(tenantId);
      expect(await leftovers(tenantId)).toEqual({ databases: 0, roles: 0 });
      // Its place in the pool database is given up (a retry chooses again), the pool database kept.
      expect(tenant.database).toBe("");
      const pools = await mesh.sql<{ name: string }>(mesh.platformDatabase, "select name from platform.pool_databases");
      expect(pools).toHaveLength(1);
      expect(await pooledSchemas(tenantId, pools[0]!.name)).toEqual([]);
      expect(await mesh.sql("postgres", "select 1 from pg_database where datname = $1", [pools[0]!.name])).toHaveLength(1);
      const ledger = await mesh.sql(mesh.platformDatabase, "select 1 from platform.tenant_schema_versions where tenant_id = $1", [tenantId]);
      expect(ledger).toEqual([]);
    });
  }

  it("serves a pooled tenant made with the usual settings afterwards, and provisions a FAILED one again on RetryProvisioning", async () => {
    await mesh.restartPlatform();
    const tenant = await mesh.createTenant({ placement: Placement.POOLED });
    expect(tenant.status).toBe(TenantStatus.ACTIVE);
    const { tenant: retried } = await mesh.platformClient.retryProvisioning({ tenantId: failed[0]! });
    expect(retried).toMatchObject({ status: TenantStatus.ACTIVE, placement: Placement.POOLED, database: tenant.database });
    const { entry } = await mesh.entries.createEntry({ title: "retried" }, { headers: { "x-tenant-id": failed[0]! } });
    expect(entry?.title).toBe("retried");
  });
});
