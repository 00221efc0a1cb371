import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { readdir } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BackupService, BackupState } from "../gen/tenantry/platform/v1/backup_service_pb.js";
import { Placement, TenantStatus } from "../gen/tenantry/platform/v1/platform_service_pb.js";
import { operatorCredentialInterceptor } from "../services/mesh/index.ts";
import { backupSteps, pooledRestoreSteps, restoreSteps, undoSteps } from "../services/platform/backups/index.ts";
import pg from "pg";
import { constraintsToSetAside, quoted } from "../services/platform/backups/index.ts";
import { callAndCrash } from "../services/testing/platform-crash.ts";
import { schemaShape } from "../services/testing/schema-shape.ts";
import { startTestMesh, type TestMesh } from "../services/testing/test-mesh.ts";

const owner = { email: "owner@example.com", password: "correct horse battery" };
const headers = (tenantId: string) => ({ headers: { "x-tenant-id": tenantId } });

let mesh: TestMesh;
let backups: Client<typeof BackupService>;
beforeAll(async () => {
  mesh = await startTestMesh({
    services: ["auth", "backend"],
    // The first sweep (at start) goes on with what a crash left; later ones need not come soon.
    platformEnv: { TENANTRY_OFFBOARDING_CHECK_INTERVAL_MS: "600000" },
  });
  backups = mesh.client("platform", BackupService, [operatorCredentialInterceptor(mesh.operatorToken)]);
});
afterAll(() => mesh?.stop());

/** Has a Platform that kills itself after `step` run `call` with a BackupService client, checks it died there, and starts the mesh's Platform again. */
async function crashAfter(step: string, call: (client: Client<typeof BackupService>) => Promise<unknown>): Promise<void> {
  const crash = await callAndCrash(mesh, step, (t) => call(createClient(BackupService, t)));
  expect(crash.signal, `Platform should have been killed after ${step}`).toBe("SIGKILL");
  expect(crash.reaped, `Platform did not kill itself after ${step}`).toBe(false);
  expect(crash.error?.code).toBe(Code.Unavailable);
  await mesh.restartPlatform();
}

/** A tenant with its owner and entries, and a backup of it taken before one more entry. */
async function backedUpTenant(prefix: string, placement = Placement.DEDICATED): Promise<{ tenantId: string; backupId: string }> {
  const { tenantId } = await mesh.createTenant({ tenantId: mesh.uniqueTenantId(prefix), owner, placement });
  await mesh.entries.createEntry({ title: "in the backup" }, headers(tenantId));
  const { backup } = await backups.createBackup({ tenantId });
  await mesh.entries.createEntry({ title: "after the backup" }, headers(tenantId));
  return { tenantId, backupId: backup!.backupId };
}

/** Waits until no restore of the tenant is left under way (the restarted Platform goes on with them). */
async function settled(tenantId: string): Promise<{ state: string; step: string | null }> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const [restore] = await mesh.sql<{ state: string; step: string | null; undo_step: string | null }>(
      mesh.platformDatabase,
      "select state, step, undo_step from platform.restores where tenant_id = $1 order by created_at desc limit 1",
      [tenantId],
    );
    if (restore !== undefined && restore.state !== "running" && restore.undo_step === null) {
      return restore;
    }
    if (Date.now() > deadline) {
      throw new Error(`the restore of ${tenantId} is still under way`);
    }
    await sleep(100);
  }
}

/**
 * The tenant's entries, as Backend serves them. A Backend whose change feed
 * was cut by the crash may hold the tenant's old route until the feed is
 * back (its cached routes are dropped then) or the route's time is up; the
 * old database refuses connections meanwhile (UNAVAILABLE), so retry.
 */
async function titles(tenantId: string): Promise<string[]> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      const { entries } = await mesh.entries.listEntries({}, headers(tenantId));
      return entries.map((e) => e.title).sort();
    } catch (error) {
      if (ConnectError.from(error).code !== Code.Unavailable || Date.now() > deadline) {
        throw error;
      }
      await sleep(100);
    }
  }
}

/** The databases on the server whose names start as the tenant's do, with whether they take connections. */
async function databasesOf(tenantId: string): Promise<{ datname: string; datallowconn: boolean }[]> {
  return mesh.sql("postgres", "select datname, datallowconn from pg_database where datname like $1 order by datname", [`tenant\\_${tenantId.replaceAll("-", "\\_")}%`]);
}

describe("a backup after a kill -9", () => {
  for (const step of backupSteps) {
    it(`is FAILED with no files left when Platform dies after "${step}" and starts again`, async () => {
      const { tenantId } = await mesh.createTenant();
      await crashAfter(`backup:${step}`, (client) => client.createBackup({ tenantId }));
      const deadline = Date.now() + 10_000;
      let listed = await backups.listBackups({ tenantId });
      while (listed.backups[0]?.state === BackupState.RUNNING && Date.now() < deadline) {
        await sleep(100);
        listed = await backups.listBackups({ tenantId });
      }
      expect(listed.backups.map((b) => [b.state, b.failureReason])).toEqual([[BackupState.FAILED, "Platform stopped while taking it; take another"]]);
      const files = await readdir(path.join(mesh.sharedEnv.TENANTRY_DATA_DIR, "backups", tenantId), { recursive: true, withFileTypes: true }).catch(() => []);
      expect(files.filter((f) => f.isFile())).toEqual([]);
    });
  }
});

describe("an in-place restore after a kill -9", () => {
  for (const step of restoreSteps.in_place) {
    it(`ends restored, the replaced database kept and closed, when Platform dies after "${step}"`, async () => {
      const { tenantId, backupId } = await backedUpTenant(step.slice(0, 12));
      const previous = (await mesh.platformClient.getTenant({ tenantId })).tenant!.database;
      await crashAfter(`in_place:${step}`, (client) => client.restoreBackup({ backupId }, { timeoutMs: 20_000 }));
      expect(await settled(tenantId)).toMatchObject({ state: "succeeded", step: "resume" });
      const tenant = (await mesh.platformClient.getTenant({ tenantId })).tenant!;
      expect(tenant.status).toBe(TenantStatus.ACTIVE);
      expect(tenant.database).not.toBe(previous);
      expect(await databasesOf(tenantId)).toEqual([
        { datname: previous, datallowconn: false },
        { datname: tenant.database, datallowconn: true },
      ].sort((a, b) => a.datname.localeCompare(b.datname)));
      expect(await titles(tenantId)).toEqual(["in the backup"]);
    });
  }
});

describe("a clone after a kill -9", () => {
  for (const step of restoreSteps.clone) {
    it(`ends ACTIVE with its own database and role, its owner signing in, when Platform dies after "${step}"`, async () => {
      const { backupId } = await backedUpTenant("source");
      const cloneId = mesh.uniqueTenantId(step.slice(0, 12));
      await crashAfter(`clone:${step}`, (client) => client.restoreBackup({ backupId, targetTenantId: cloneId }, { timeoutMs: 20_000 }));
      expect(await settled(cloneId)).toMatchObject({ state: "succeeded" });
      expect((await mesh.platformClient.getTenant({ tenantId: cloneId })).tenant?.status).toBe(TenantStatus.ACTIVE);
      expect((await databasesOf(cloneId)).map((d) => d.datname)).toEqual([`tenant_${cloneId.replaceAll("-", "_")}`]);
      expect(await titles(cloneId)).toEqual(["in the backup"]);
      expect(await mesh.login(cloneId, owner)).toMatch(/^ey/);
    });
  }
});

describe("a clone whose load was cut short", () => {
  it("loads again from the start, rebuilding what the first load had set aside", async () => {
    const { tenantId, backupId } = await backedUpTenant("midload");
    const source = await schemaShape(mesh.databaseUrl((await mesh.platformClient.getTenant({ tenantId })).tenant!.database), ["auth", "backend"]);
    const cloneId = mesh.uniqueTenantId("midload");
    const crash = await callAndCrash(mesh, "clone:load", (t) => createClient(BackupService, t).restoreBackup({ backupId, targetTenantId: cloneId }, { timeoutMs: 20_000 }));
    expect(crash.signal).toBe("SIGKILL");
    // The database as a load that stopped after setting keys and indexes aside leaves it: the record of them, some
    // rebuilt, others not, one table emptied (its load not committed), written as the clone's role writes them.
    const database = `tenant_${cloneId.replaceAll("-", "_")}`;
    const client = new pg.Client({ connectionString: mesh.databaseUrl(database) });
    await client.connect();
    try {
      await client.query(`set role ${pg.escapeIdentifier(database)}`);
      const items = await constraintsToSetAside(client, ["auth", "backend"]);
      await client.query("create schema tenantry_restore; create table tenantry_restore.set_aside (items jsonb not null)");
      await client.query("insert into tenantry_restore.set_aside (items) values ($1)", [JSON.stringify(items)]);
      for (const item of items) {
        await client.query(item.drop);
      }
      const entries = quoted({ schema: "backend", name: "entries" });
      for (const item of items.filter((i) => i.table !== entries && i.kind !== "foreign-key").slice(0, 3)) {
        for (const statement of item.rebuild) {
          await client.query(statement);
        }
      }
      await client.query(`truncate ${entries}`);
    } finally {
      await client.end();
    }
    await mesh.restartPlatform();
    expect(await settled(cloneId)).toMatchObject({ state: "succeeded" });
    expect(await schemaShape(mesh.databaseUrl(database), ["auth", "backend"])).toEqual(source);
    expect(await mesh.sql(database, "select nspname from pg_namespace where nspname = 'tenantry_restore'")).toEqual([]);
    expect(await titles(cloneId)).toEqual(["in the backup"]);
    expect(await mesh.login(cloneId, owner)).toMatch(/^ey/);
  });
});

describe("a pooled clone whose load was cut short", () => {
  it("loads again from the start, rebuilding what the first load had set aside in its generation's load schema", async () => {
    const { tenantId, backupId } = await backedUpTenant("pmidload", Placement.POOLED);
    const sourcePrefix = `t_${tenantId.replaceAll("-", "_")}_`;
    const pool = (await mesh.platformClient.getTenant({ tenantId })).tenant!.database;
    const unprefixed = (lines: string[], prefix: string) => lines.map((line) => line.replaceAll(prefix, ""));
    const source = unprefixed(await schemaShape(mesh.databaseUrl(pool), ["auth", "backend"].map((s) => sourcePrefix + s)), sourcePrefix);
    const cloneId = mesh.uniqueTenantId("pmidload");
    const crash = await callAndCrash(mesh, "clone:load", (t) => createClient(BackupService, t).restoreBackup({ backupId, targetTenantId: cloneId }, { timeoutMs: 20_000 }));
    expect(crash.signal).toBe("SIGKILL");
    // The clone's schemas as a load that stopped after setting keys and indexes aside leaves them, written as the clone's role writes them.
    const prefix = `t_${cloneId.replaceAll("-", "_")}_`;
    const schemas = ["auth", "backend"].map((s) => prefix + s);
    const state = `${prefix}tenantry_load`;
    const client = new pg.Client({ connectionString: mesh.databaseUrl(pool) });
    await client.connect();
    try {
      await client.query(`set role ${pg.escapeIdentifier(`tenant_${cloneId.replaceAll("-", "_")}`)}; set search_path = pg_catalog`);
      const items = await constraintsToSetAside(client, schemas);
      await client.query(`create table ${pg.escapeIdentifier(state)}.set_aside (items jsonb not null)`);
      await client.query(`insert into ${pg.escapeIdentifier(state)}.set_aside (items) values ($1)`, [JSON.stringify(items)]);
      for (const item of items) {
        await client.query(item.drop);
      }
      const entries = quoted({ schema: `${prefix}backend`, name: "entries" });
      for (const item of items.filter((i) => i.table !== entries && i.kind !== "foreign-key").slice(0, 3)) {
        for (const statement of item.rebuild) {
          await client.query(statement);
        }
      }
      await client.query(`truncate ${entries}`);
    } finally {
      await client.end();
    }
    await mesh.restartPlatform();
    expect(await settled(cloneId)).toMatchObject({ state: "succeeded" });
    expect(unprefixed(await schemaShape(mesh.databaseUrl(pool), schemas), prefix)).toEqual(source);
    expect(await pooledSchemasOf(cloneId)).toEqual(generation(prefix, true));
    expect(await pooledTitles(cloneId)).toEqual(["in the backup"]);
    expect(await mesh.login(cloneId, owner)).toMatch(/^ey/);
  });
});

describe("an undo after a kill -9", () => {
  for (const step of undoSteps) {
    it(`ends with the replaced database serving and the restored one dropped, when Platform dies after "${step}"`, async () => {
      const { tenantId, backupId } = await backedUpTenant(step.slice(0, 12));
      const previous = (await mesh.platformClient.getTenant({ tenantId })).tenant!.database;
      await backups.restoreBackup({ backupId });
      await crashAfter(`undo:${step}`, (client) => client.undoRestore({ tenantId }, { timeoutMs: 20_000 }));
      expect(await settled(tenantId)).toMatchObject({ state: "undone" });
      const tenant = (await mesh.platformClient.getTenant({ tenantId })).tenant!;
      expect([tenant.status, tenant.database]).toEqual([TenantStatus.ACTIVE, previous]);
      expect(await databasesOf(tenantId)).toEqual([{ datname: previous, datallowconn: true }]);
      expect(await titles(tenantId)).toEqual(["after the backup", "in the backup"]);
    });
  }
});

/** The schemas a pooled tenant's role owns in its pool database, and whether the role may use each. */
async function pooledSchemasOf(tenantId: string): Promise<{ nspname: string; usable: boolean }[]> {
  const database = (await mesh.platformClient.getTenant({ tenantId })).tenant!.database;
  const role = `tenant_${tenantId.replaceAll("-", "_")}`;
  return mesh.sql(
    database,
    "select nspname, has_schema_privilege($1, oid, 'usage') as usable from pg_namespace where nspowner = (select oid from pg_roles where rolname = $1) order by 1",
    [role],
  );
}

/** The schemas of a pooled tenant's generation of `prefix`, each usable or not. */
const generation = (prefix: string, usable: boolean) => ["auth", "backend"].map((s) => ({ nspname: prefix + s, usable }));

/**
 * The tenant's entries, as Backend serves them, once it does: a Backend
 * whose change feed was cut by the crash may hold a pooled tenant's old
 * route until the feed is back, whose schemas the tenant's role may no
 * longer use, so every failure is retried for a while.
 */
async function pooledTitles(tenantId: string): Promise<string[]> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      const { entries } = await mesh.entries.listEntries({}, headers(tenantId));
      return entries.map((e) => e.title).sort();
    } catch (error) {
      if (Date.now() > deadline) {
        throw error;
      }
      await sleep(100);
    }
  }
}

describe("a pooled tenant's in-place restore after a kill -9", () => {
  for (const step of pooledRestoreSteps.in_place) {
    it(`ends restored in a new generation of schemas, the replaced one kept and unusable, when Platform dies after "${step}"`, async () => {
      const { tenantId, backupId } = await backedUpTenant(step.slice(0, 12), Placement.POOLED);
      const base = `t_${tenantId.replaceAll("-", "_")}_`;
      await crashAfter(`in_place:${step}`, (client) => client.restoreBackup({ backupId }, { timeoutMs: 20_000 }));
      expect(await settled(tenantId)).toMatchObject({ state: "succeeded", step: "resume" });
      const tenant = (await mesh.platformClient.getTenant({ tenantId })).tenant!;
      expect(tenant.status).toBe(TenantStatus.ACTIVE);
      const { route } = await mesh.platformMeshClient.resolveTenant({ tenantId });
      expect(route?.schemaPrefix).toBe(`${base}r2__`);
      // Nothing of the load left behind: the two generations' schemas only.
      expect(await pooledSchemasOf(tenantId)).toEqual([...generation(base, false), ...generation(`${base}r2__`, true)]);
      expect(await pooledTitles(tenantId)).toEqual(["in the backup"]);
    });
  }
});

describe("a pooled clone after a kill -9", () => {
  for (const step of pooledRestoreSteps.clone) {
    it(`ends ACTIVE and pooled with its own role and schemas, its owner signing in, when Platform dies after "${step}"`, async () => {
      const { backupId } = await backedUpTenant("psource", Placement.POOLED);
      const cloneId = mesh.uniqueTenantId(`p${step.slice(0, 11)}`);
      await crashAfter(`clone:${step}`, (client) => client.restoreBackup({ backupId, targetTenantId: cloneId }, { timeoutMs: 20_000 }));
      expect(await settled(cloneId)).toMatchObject({ state: "succeeded" });
      const tenant = (await mesh.platformClient.getTenant({ tenantId: cloneId })).tenant!;
      expect([tenant.status, tenant.placement]).toEqual([TenantStatus.ACTIVE, Placement.POOLED]);
      expect(await pooledSchemasOf(cloneId)).toEqual(generation(`t_${cloneId.replaceAll("-", "_")}_`, true));
      expect(await databasesOf(cloneId)).toEqual([]);
      expect(await pooledTitles(cloneId)).toEqual(["in the backup"]);
      expect(await mesh.login(cloneId, owner)).toMatch(/^ey/);
    });
  }
});

describe("a pooled tenant's undo after a kill -9", () => {
  for (const step of undoSteps) {
    it(`ends with the replaced schemas serving and the restored ones dropped, when Platform dies after "${step}"`, async () => {
      const { tenantId, backupId } = await backedUpTenant(step.slice(0, 12), Placement.POOLED);
      const base = `t_${tenantId.replaceAll("-", "_")}_`;
      await backups.restoreBackup({ backupId });
      await crashAfter(`undo:${step}`, (client) => client.undoRestore({ tenantId }, { timeoutMs: 20_000 }));
      expect(await settled(tenantId)).toMatchObject({ state: "undone" });
      const tenant = (await mesh.platformClient.getTenant({ tenantId })).tenant!;
      expect(tenant.status).toBe(TenantStatus.ACTIVE);
      const { route } = await mesh.platformMeshClient.resolveTenant({ tenantId });
      expect(route?.schemaPrefix).toBe(base);
      expect(await pooledSchemasOf(tenantId)).toEqual(generation(base, true));
      expect(await pooledTitles(tenantId)).toEqual(["after the backup", "in the backup"]);
    });
  }
});

describe("a verification after a kill -9", () => {
  it("finishes, dropping its scratch database and role, when Platform dies after loading it", async () => {
    const { backupId } = await backedUpTenant("verify");
    await crashAfter("verify:load", (client) => client.verifyBackup({ backupId }, { timeoutMs: 20_000 }));
    const deadline = Date.now() + 10_000;
    let backup = (await backups.getBackup({ backupId })).backup!;
    while (backup.verifyTime === undefined && Date.now() < deadline) {
      await sleep(100);
      backup = (await backups.getBackup({ backupId })).backup!;
    }
    expect(backup.verifyError).toBe("");
    expect(await mesh.sql("postgres", "select datname from pg_database where datname like 'tenantry_verify_%' union all select rolname from pg_roles where rolname like 'tenantry_verify_%'")).toEqual([]);
  });
});
