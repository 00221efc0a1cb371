import { createHash } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Placement, TenantStatus, type Tenant } from "../../../gen/tenantry/platform/v1/platform_service_pb.js";
import { registry } from "../../registry.ts";
import { newerBackendMigrations, upcomingBackendVersion } from "../../testing/newer-backend.ts";
import { startTestMesh, type TestMesh } from "../../testing/test-mesh.ts";

const size = 2;
let mesh: TestMesh;
let pool: string;
let slotPrefix: string;

/** The services that own a schema in every tenant's data, by name. */
const schemaOwners = registry.flatMap((s) => (s.schema === undefined ? [] : [s.schema])).sort();

beforeAll(async () => {
  // Sweeps every half second, so that the stock follows a deploy within the specs' patience.
  mesh = await startTestMesh({ platformEnv: { TENANTRY_POOLED_STOCK: String(size), TENANTRY_OFFBOARDING_CHECK_INTERVAL_MS: "500" } });
  // The first pooled tenant opens the pool database; its stock is built after.
  const first = await mesh.createTenant({ placement: Placement.POOLED });
  pool = first.database;
  slotPrefix = `slot_${createHash("sha256").update(pool).digest("hex").slice(0, 8)}_`;
});
afterAll(() => mesh?.stop());

interface SlotRole {
  oid: number;
  role: string;
  login: boolean;
  /** Not being built (its name then ends with _b). */
  built: boolean;
}

/** The slot roles of the pool database. */
function slotsOn(): Promise<SlotRole[]> {
  return mesh.sql<SlotRole>("postgres", "select oid::int, rolname as role, rolcanlogin as login, rolname !~ '_b$' as built from pg_roles where starts_with(rolname, $1) order by rolname", [slotPrefix]);
}

/** Waits until the pool database holds `count` ready slots and no other. */
async function slotsOf(count: number): Promise<SlotRole[]> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const slots = await slotsOn();
    if (slots.length === count && slots.every((s) => s.built)) {
      return slots;
    }
    if (Date.now() > deadline) {
      throw new Error(`expected ${count} ready slots, found ${JSON.stringify(slots)}`);
    }
    await sleep(50);
  }
}

/** The schemas a role owns in the pool database, with their oids. */
function schemasOf(role: string): Promise<{ oid: number; nspname: string }[]> {
  return mesh.sql(pool, "select oid::int, nspname from pg_namespace where nspowner = (select oid from pg_roles where rolname = $1) order by nspname", [role]);
}

/** How a role is granted to the pool's login: taken on with SET ROLE, not inherited. */
function grantOf(role: string): Promise<{ inherit: boolean; set: boolean }[]> {
  return mesh.sql(
    "postgres",
    "select inherit_option as inherit, set_option as set from pg_auth_members where roleid = (select oid from pg_roles where rolname = $1) and member = (select oid from pg_roles where rolname = $2)",
    [role, pool],
  );
}

const roleOf = (tenant: Pick<Tenant, "tenantId">) => `tenant_${tenant.tenantId.replaceAll("-", "_")}`;
const prefixOf = (tenant: Pick<Tenant, "tenantId">) => `t_${tenant.tenantId.replaceAll("-", "_")}_`;
const headers = (tenantId: string) => ({ headers: { "x-tenant-id": tenantId } });

describe("the pooled stock", () => {
  it("keeps ready slots in a pool database: NOLOGIN roles granted to the pool's login for SET ROLE only, owning a migrated schema per service", async () => {
    const slots = await slotsOf(size);
    for (const slot of slots) {
      expect(slot.login).toBe(false);
      expect(await grantOf(slot.role)).toEqual([{ inherit: false, set: true }]);
      const schemas = await schemasOf(slot.role);
      expect(schemas.map((s) => s.nspname.replace(/^s_[0-9a-f]{8}_/, ""))).toEqual(schemaOwners);
      // No tenant's prefix: a tenant's schemas start with t_.
      expect(schemas.every((s) => s.nspname.startsWith("s_"))).toBe(true);
      for (const { nspname } of schemas) {
        expect(await mesh.sql(pool, `select 1 from ${pg.escapeIdentifier(nspname)}.mikro_orm_migrations limit 1`)).toHaveLength(1);
      }
    }
  });

  it("gives a new pooled tenant a slot by renaming its role and schemas: the grant holds, the tenant is served, and the stock is refilled", async () => {
    const slots = await slotsOf(size);
    const owned = new Map(await Promise.all(slots.map(async (s) => [s.oid, await schemasOf(s.role)] as const)));
    const owner = { email: "owner@example.com", password: "a long password" };
    const tenant = await mesh.createTenant({ placement: Placement.POOLED, owner });
    expect(tenant).toMatchObject({ status: TenantStatus.ACTIVE, database: pool });
    const [role] = await mesh.sql<{ oid: number; login: boolean }>("postgres", "select oid::int, rolcanlogin as login from pg_roles where rolname = $1", [roleOf(tenant)]);
    expect(slots.map((s) => s.oid)).toContain(role!.oid);
    expect(role!.login).toBe(false);
    // The slot's schemas, renamed: the same oids, the tenant's names.
    const schemas = await schemasOf(roleOf(tenant));
    expect(schemas.map((s) => s.oid).sort()).toEqual(owned.get(role!.oid)!.map((s) => s.oid).sort());
    expect(schemas.map((s) => s.nspname)).toEqual(schemaOwners.map((service) => prefixOf(tenant) + service));
    expect(await grantOf(roleOf(tenant))).toEqual([{ inherit: false, set: true }]);
    const ledger = await mesh.sql(mesh.platformDatabase, "select service from platform.tenant_schema_versions where tenant_id = $1 order by 1", [tenant.tenantId]);
    expect(ledger).toEqual(schemaOwners.map((service) => ({ service })));
    expect(await mesh.login(tenant.tenantId, owner)).not.toBe("");
    const { entry } = await mesh.entries.createEntry({ title: "in a slot" }, headers(tenant.tenantId));
    expect(entry?.title).toBe("in a slot");
    const titles = (await mesh.entries.listEntries({}, headers(tenant.tenantId))).entries.map((e) => e.title);
    expect(titles).toEqual(["in a slot"]);
    // The stock is full again, of another slot besides the one left.
    const refilled = await slotsOf(size);
    expect(refilled.filter((s) => slots.every((old) => old.oid !== s.oid))).toHaveLength(1);
  });

  it("never hands one slot to two tenants provisioned at once; those left without get a role and schemas made", async () => {
    const slots = await slotsOf(size);
    const tenants = await Promise.all(Array.from({ length: 5 }, () => mesh.createTenant({ placement: Placement.POOLED })));
    expect(tenants.every((t) => t.status === TenantStatus.ACTIVE)).toBe(true);
    const oids = await Promise.all(
      tenants.map(async (t) => (await mesh.sql<{ oid: number }>("postgres", "select oid::int from pg_roles where rolname = $1", [roleOf(t)]))[0]!.oid),
    );
    expect(new Set(oids).size).toBe(tenants.length);
    // Both slots were taken (refills wait for the provisionings under way), once each.
    expect(oids.filter((oid) => slots.some((s) => s.oid === oid)).sort()).toEqual(slots.map((s) => s.oid).sort());
    for (const tenant of tenants) {
      expect((await schemasOf(roleOf(tenant))).map((s) => s.nspname)).toEqual(schemaOwners.map((service) => prefixOf(tenant) + service));
      const { entry } = await mesh.entries.createEntry({ title: tenant.tenantId }, headers(tenant.tenantId));
      expect(entry?.title).toBe(tenant.tenantId);
    }
    await slotsOf(size);
  });

  it("undoes a provisioning that fails after taking a slot: the slot's schemas are dropped with the role, the tenant FAILED", async () => {
    const slots = await slotsOf(size);
    // Spoil the stock while Platform is down: Auth cannot bootstrap a tenant without its table of users' roles.
    await mesh.stopPlatform();
    for (const slot of slots) {
      const auth = (await schemasOf(slot.role)).find((s) => s.nspname.endsWith("_auth"))!;
      await mesh.sql(pool, `drop table ${pg.escapeIdentifier(auth.nspname)}.user_roles`);
    }
    await mesh.restartPlatform();
    const tenantId = mesh.uniqueTenantId("spoilt");
    await expect(mesh.platformClient.createTenant({ tenantId, placement: Placement.POOLED })).rejects.toThrow(/provisioning tenant .* failed/);
    const { tenant } = await mesh.platformClient.getTenant({ tenantId });
    expect(tenant).toMatchObject({ status: TenantStatus.FAILED, error: expect.stringMatching(/auth could not bootstrap/) });
    expect(await mesh.sql("postgres", "select 1 from pg_roles where rolname = $1 or oid = $2", [roleOf({ tenantId }), slots[0]!.oid])).toEqual([]);
    expect(await mesh.sql(pool, "select 1 from pg_namespace where starts_with(nspname, $1)", [prefixOf({ tenantId })])).toEqual([]);
    // The other spoilt one goes; the stock is built again.
    await mesh.stopPlatform();
    await mesh.sql(pool, `drop owned by ${pg.escapeIdentifier(slots[1]!.role)} cascade; drop role ${pg.escapeIdentifier(slots[1]!.role)}`);
    await mesh.restartPlatform();
    await slotsOf(size);
  });

  it("drops what a refill left half-built", async () => {
    const slots = await slotsOf(size);
    const halfBuilt = `${slots[0]!.role.slice(0, -8)}0badc0de_b`;
    await mesh.sql(pool, `create role ${pg.escapeIdentifier(halfBuilt)} nologin; create schema s_0badc0de_auth authorization ${pg.escapeIdentifier(halfBuilt)}`);
    const deadline = Date.now() + 30_000;
    while ((await mesh.sql("postgres", "select 1 from pg_roles where rolname = $1", [halfBuilt])).length > 0) {
      expect(Date.now()).toBeLessThan(deadline);
      await sleep(50);
    }
    expect(await mesh.sql(pool, "select 1 from pg_namespace where nspname = 's_0badc0de_auth'")).toEqual([]);
    expect((await slotsOf(size)).map((s) => s.oid)).toEqual(slots.map((s) => s.oid));
  });

  it("shows no slot as a tenant: not listed, not counted in its pool database", async () => {
    await slotsOf(size);
    const { tenants } = await mesh.platformClient.listTenants({ pageSize: 1000 });
    expect(tenants.every((t) => !t.tenantId.includes("slot"))).toBe(true);
    const [count] = await mesh.sql<{ n: number }>(mesh.platformDatabase, "select count(*)::int as n from platform.tenants where database = $1 and status = 'active'", [pool]);
    expect(count!.n).toBe(tenants.filter((t) => t.database === pool && t.status === TenantStatus.ACTIVE).length);
  });

  it("follows a deploy with a new migration: slots at the older versions are dropped, never handed out, and a tenant taking a new one is current", async () => {
    // Slots taken first: Platform keeps the versions the services answered, on the connections they answered on.
    for (let i = 0; i < 2; i++) {
      await slotsOf(size);
      await mesh.createTenant({ placement: Placement.POOLED });
    }
    const before = await slotsOf(size);
    await mesh.restartBackend(newerBackendMigrations);
    // Provisioned at once: the slots at the older versions are not taken, whatever Platform's cached answer says.
    const right = await mesh.createTenant({ placement: Placement.POOLED });
    const [rightRole] = await mesh.sql<{ oid: number }>("postgres", "select oid::int from pg_roles where rolname = $1", [roleOf(right)]);
    expect(before.map((s) => s.oid)).not.toContain(rightRole!.oid);
    expect(await mesh.sql(pool, `select 1 from ${pg.escapeIdentifier(`${prefixOf(right)}backend`)}.mikro_orm_migrations where name = $1`, [upcomingBackendVersion])).toHaveLength(1);
    const deadline = Date.now() + 60_000;
    let after = await slotsOn();
    while (!(after.length === size && after.every((s) => s.built && before.every((old) => old.oid !== s.oid)))) {
      expect(Date.now()).toBeLessThan(deadline);
      await sleep(100);
      after = await slotsOn();
    }
    const tenant = await mesh.createTenant({ placement: Placement.POOLED });
    const [role] = await mesh.sql<{ oid: number }>("postgres", "select oid::int from pg_roles where rolname = $1", [roleOf(tenant)]);
    expect(after.map((s) => s.oid)).toContain(role!.oid);
    expect(await mesh.sql(pool, `select 1 from ${pg.escapeIdentifier(`${prefixOf(tenant)}backend`)}.mikro_orm_migrations where name = $1`, [upcomingBackendVersion])).toHaveLength(1);
    const ledger = await mesh.sql(mesh.platformDatabase, "select version from platform.tenant_schema_versions where tenant_id = $1 and service = 'backend'", [tenant.tenantId]);
    expect(ledger).toEqual([{ version: upcomingBackendVersion }]);
    const { entry } = await mesh.entries.createEntry({ title: "current" }, headers(tenant.tenantId));
    expect(entry?.title).toBe("current");
  });

  it("keeps none with TENANTRY_POOLED_STOCK=0, dropping those left with their schemas; provisioning makes the role and schemas then", async () => {
    const slots = await slotsOf(size);
    await mesh.restartPlatform({ TENANTRY_POOLED_STOCK: "0" });
    await slotsOf(0);
    for (const slot of slots) {
      expect(await schemasOf(slot.role)).toEqual([]);
    }
    expect(await mesh.sql(pool, "select nspname from pg_namespace where starts_with(nspname, 's_')")).toEqual([]);
    const tenant = await mesh.createTenant({ placement: Placement.POOLED });
    expect(tenant.status).toBe(TenantStatus.ACTIVE);
    expect(await grantOf(roleOf(tenant))).toEqual([{ inherit: false, set: true }]);
    await mesh.restartPlatform();
    await slotsOf(size);
  });
});
