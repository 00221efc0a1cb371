import { createClient, type Client } from "@connectrpc/connect";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BackupService, RestoreKind, RestoreState } from "../../../gen/tenantry/platform/v1/backup_service_pb.js";
import { TenantStatus } from "../../../gen/tenantry/platform/v1/platform_service_pb.js";
import { operatorCredentialInterceptor, tenantIdHeader } from "../../mesh/index.ts";
import { callAndCrash } from "../../testing/platform-crash.ts";
import { retried } from "../../testing/retried.ts";
import { schemaShape } from "../../testing/schema-shape.ts";
import { tableDigests } from "../../testing/table-digests.ts";
import { startTestMesh, type TestMesh } from "../../testing/test-mesh.ts";

const schemas = ["auth", "backend"];
const owner = { email: "owner@example.com", password: "correct horse battery" };
const size = 2;

let mesh: TestMesh;
let backups: Client<typeof BackupService>;
let stockPrefix: string;
beforeAll(async () => {
  mesh = await startTestMesh({
    services: ["auth", "backend"],
    // A stock of ready databases, as a deployment keeps by default (test meshes keep none).
    platformEnv: { TENANTRY_DATABASE_STOCK: String(size), TENANTRY_OFFBOARDING_CHECK_INTERVAL_MS: "600000" },
  });
  backups = mesh.client("platform", BackupService, [operatorCredentialInterceptor(mesh.operatorToken)]);
  stockPrefix = `${mesh.platformDatabase}_stock_`;
});
afterAll(() => mesh?.stop());

const headers = (tenantId: string) => ({ headers: { [tenantIdHeader]: tenantId } });

/** Waits until the server holds `size` ready stock databases; their oids (a database keeps its oid when renamed). */
async function readyStock(): Promise<number[]> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const stock = await mesh.sql<{ oid: number; open: boolean; name: string }>(
      "postgres",
      "select oid::int, datallowconn as open, datname as name from pg_database where starts_with(datname, $1) order by oid",
      [stockPrefix],
    );
    if (stock.length === size && stock.every((s) => !s.open && !s.name.endsWith("_b"))) {
      return stock.map((s) => s.oid);
    }
    if (Date.now() > deadline) {
      throw new Error(`the stock is not refilled: ${JSON.stringify(stock)}`);
    }
    await sleep(50);
  }
}

async function databaseOid(database: string): Promise<number | undefined> {
  return (await mesh.sql<{ oid: number }>("postgres", "select oid::int from pg_database where datname = $1", [database]))[0]?.oid;
}

/** The roles owning anything in the tenant's schemas of a database, other than `role`. */
async function otherOwners(database: string, role: string): Promise<string[]> {
  const rows = await mesh.sql<{ owner: string }>(
    database,
    `select distinct pg_get_userbyid(c.relowner) as owner from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = any($1)
     union select distinct pg_get_userbyid(nspowner) from pg_namespace where nspname = any($1)`,
    [schemas],
  );
  return rows.map((r) => r.owner).filter((o) => o !== role);
}

/** A tenant with its owner and entries, and a backup of it taken before one more entry. */
async function backedUpTenant(prefix: string): Promise<{ tenantId: string; backupId: string; database: string; digests: Record<string, string> }> {
  const { tenantId, database } = await mesh.createTenant({ tenantId: mesh.uniqueTenantId(prefix), owner });
  await mesh.entries.createEntry({ title: "in the backup", tags: ["kept"] }, headers(tenantId));
  const digests = await tableDigests(mesh.databaseUrl(database), schemas);
  const { backup } = await backups.createBackup({ tenantId });
  await mesh.entries.createEntry({ title: "after the backup" }, headers(tenantId));
  return { tenantId, backupId: backup!.backupId, database, digests };
}

/** The tenant's entries as Backend serves them (asked again while a route switched by the restore reaches it). */
async function titles(tenantId: string): Promise<string[]> {
  const { entries } = await retried(() => mesh.entries.listEntries({}, headers(tenantId)));
  return entries.map((e) => e.title).sort();
}

describe("a restore with a stock of ready databases", () => {
  it("clones into a stock database holding the backup's versions: the source's shape and rows, all the clone's own", async () => {
    const { backupId, database: sourceDatabase, digests } = await backedUpTenant("stocksrc");
    const shape = await schemaShape(mesh.databaseUrl(sourceDatabase), schemas);
    const stock = await readyStock();
    const cloneId = mesh.uniqueTenantId("stockclone");
    const { restore, tenant } = await backups.restoreBackup({ backupId, targetTenantId: cloneId });
    expect(restore).toMatchObject({ kind: RestoreKind.CLONE, state: RestoreState.SUCCEEDED });
    expect(tenant?.status).toBe(TenantStatus.ACTIVE);
    // Taken from the stock (renamed, so the same oid), not created.
    expect(stock).toContain(await databaseOid(tenant!.database));
    expect(await otherOwners(tenant!.database, tenant!.database)).toEqual([]);
    expect(await schemaShape(mesh.databaseUrl(tenant!.database), schemas)).toEqual(shape);
    // Every table as backed up, but the signing keys: a clone signs with keys of its own (adopt).
    const { "auth.signing_keys": cloneKeys, ...cloned } = await tableDigests(mesh.databaseUrl(tenant!.database), schemas);
    const { "auth.signing_keys": sourceKeys, ...backedUp } = digests;
    expect(cloned).toEqual(backedUp);
    expect(cloneKeys).not.toBe(sourceKeys);
    expect(await titles(cloneId)).toEqual(["in the backup"]);
    expect(await mesh.login(cloneId, owner)).toMatch(/^ey/);
    // Closed to everyone but its role.
    const [acl] = await mesh.sql<{ acl: string }>("postgres", "select datacl::text as acl from pg_database where datname = $1", [tenant!.database]);
    expect(acl?.acl).not.toMatch(/(^|[{,])=/);
    // And the stock is made whole again.
    expect((await readyStock()).filter((oid) => stock.includes(oid))).toHaveLength(size - 1);
  });

  it("restores in place into a stock database, and undoes it", async () => {
    const { tenantId, backupId, database: previous, digests } = await backedUpTenant("stockinplace");
    const stock = await readyStock();
    const { restore, tenant } = await backups.restoreBackup({ backupId });
    expect(restore).toMatchObject({ kind: RestoreKind.IN_PLACE, state: RestoreState.SUCCEEDED, previousDatabase: previous });
    expect(stock).toContain(await databaseOid(tenant!.database));
    expect(await otherOwners(tenant!.database, previous)).toEqual([]);
    expect(await tableDigests(mesh.databaseUrl(tenant!.database), schemas)).toEqual(digests);
    expect(await titles(tenantId)).toEqual(["in the backup"]);
    await backups.undoRestore({ tenantId });
    expect(await titles(tenantId)).toEqual(["after the backup", "in the backup"]);
    expect(await databaseOid(restore!.database)).toBeUndefined();
  });

  it("goes on with a taken stock database when Platform dies right after taking it", async () => {
    const { backupId } = await backedUpTenant("stockcrash");
    const stock = await readyStock();
    const cloneId = mesh.uniqueTenantId("stockcrash");
    const crash = await callAndCrash(mesh, "clone:create-database", (t) => createClient(BackupService, t).restoreBackup({ backupId, targetTenantId: cloneId }, { timeoutMs: 20_000 }));
    expect(crash.signal).toBe("SIGKILL");
    const database = `tenant_${cloneId.replaceAll("-", "_")}`;
    expect(stock).toContain(await databaseOid(database));
    await mesh.restartPlatform();
    const deadline = Date.now() + 30_000;
    let state = "";
    while (state !== "succeeded" && Date.now() < deadline) {
      await sleep(100);
      [{ state = "" } = {}] = await mesh.sql<{ state: string }>(mesh.platformDatabase, "select state from platform.restores where tenant_id = $1", [cloneId]);
    }
    expect(state).toBe("succeeded");
    expect(await otherOwners(database, database)).toEqual([]);
    expect(await titles(cloneId)).toEqual(["in the backup"]);
    expect(await mesh.login(cloneId, owner)).toMatch(/^ey/);
  });
});
