import { Code, type Client } from "@connectrpc/connect";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthService } from "../../../gen/tenantry/auth/v1/auth_service_pb.js";
import { EntryService } from "../../../gen/tenantry/backend/v1/entry_service_pb.js";
import { BackupService, BackupState, RestoreKind, RestoreState, VerifyResult } from "../../../gen/tenantry/platform/v1/backup_service_pb.js";
import { TenantStatus, Tier } from "../../../gen/tenantry/platform/v1/platform_service_pb.js";
import { operatorCredentialInterceptor, tenantIdHeader } from "../../mesh/index.ts";
import { failure } from "../../testing/failure.ts";
import { schemaShape } from "../../testing/schema-shape.ts";
import { tableDigests } from "../../testing/table-digests.ts";
import { startTestMesh, type TestMesh } from "../../testing/test-mesh.ts";

const schemas = ["auth", "backend"];
const owner = { email: "owner@example.com", password: "correct horse battery" };

let mesh: TestMesh;
let backups: Client<typeof BackupService>;
beforeAll(async () => {
  mesh = await startTestMesh({
    services: ["auth", "backend"],
    // Routes are trusted for minutes: a switch of database must reach the services through the change feed.
    tenantServiceEnv: { TENANTRY_TENANT_CACHE_TTL_MS: "600000", TENANTRY_TENANT_WATCHED_TTL_MS: "600000" },
  });
  backups = mesh.client("platform", BackupService, [operatorCredentialInterceptor(mesh.operatorToken)]);
});
afterAll(() => mesh?.stop());

const headers = (tenantId: string, token?: string) => ({ headers: { [tenantIdHeader]: tenantId, ...(token === undefined ? {} : { authorization: `Bearer ${token}` }) } });

/** A tenant with its owner and a few entries. */
async function tenantWithEntries(titles: string[]): Promise<string> {
  const { tenantId } = await mesh.createTenant({ owner });
  for (const title of titles) {
    await mesh.entries.createEntry({ title, tags: ["backup"] }, headers(tenantId));
  }
  return tenantId;
}

async function titles(tenantId: string): Promise<string[]> {
  const { entries } = await mesh.entries.listEntries({ pageSize: 100 }, headers(tenantId));
  return entries.map((e) => e.title).sort();
}

async function databaseOf(tenantId: string): Promise<string> {
  return (await mesh.platformClient.getTenant({ tenantId })).tenant!.database;
}

/** Polls until `check` holds (a change reaching the services through the feed). */
async function eventually(check: () => Promise<boolean>, limitMs = 5000): Promise<void> {
  const deadline = Date.now() + limitMs;
  while (!(await check().catch(() => false))) {
    if (Date.now() > deadline) {
      throw new Error(`not within ${limitMs} ms`);
    }
    await sleep(25);
  }
}

describe("backups", () => {
  it("hold every table in one snapshot, restore in place to equal digests, and verify", async () => {
    const tenantId = await tenantWithEntries(["one", "two", "three"]);
    const before = await tableDigests(mesh.databaseUrl(await databaseOf(tenantId)), schemas);
    const shape = await schemaShape(mesh.databaseUrl(await databaseOf(tenantId)), schemas);
    expect(shape.filter((line) => line.startsWith("constraint")).length).toBeGreaterThan(10);
    let started = performance.now();
    const { backup } = await backups.createBackup({ tenantId, label: "before the change" });
    console.info(`backup of a small tenant: ${(performance.now() - started).toFixed(0)} ms, ${backup!.sizeBytes} bytes`);
    expect(backup).toMatchObject({ tenantId, label: "before the change", state: BackupState.SUCCEEDED, failureReason: "" });
    expect(backup!.tables.map((t) => t.name).sort()).toEqual(Object.keys(before).sort());
    expect(backup!.tables.find((t) => t.name === "backend.entries")?.rows).toBe(3n);
    expect(backup!.schemaVersions.map((v) => v.service).sort()).toEqual(schemas);
    expect((await backups.getBackup({ backupId: backup!.backupId })).backup).toEqual(backup);

    started = performance.now();
    const { backup: verified } = await backups.verifyBackup({ backupId: backup!.backupId });
    console.info(`verification drill: ${(performance.now() - started).toFixed(0)} ms`);
    expect(verified).toMatchObject({ verifyResult: VerifyResult.PASSED, verifyError: "" });
    const scratch = await mesh.sql("postgres", "select datname from pg_database where datname like 'tenantry_verify_%' union all select rolname from pg_roles where rolname like 'tenantry_verify_%'");
    expect(scratch).toEqual([]);

    await mesh.entries.createEntry({ title: "after the backup" }, headers(tenantId));
    const previous = await databaseOf(tenantId);
    started = performance.now();
    const { restore, tenant } = await backups.restoreBackup({ backupId: backup!.backupId });
    console.info(`in-place restore of a small tenant: ${(performance.now() - started).toFixed(0)} ms`);
    expect(restore).toMatchObject({ kind: RestoreKind.IN_PLACE, state: RestoreState.SUCCEEDED, tenantId, previousDatabase: previous });
    expect(tenant).toMatchObject({ status: TenantStatus.ACTIVE, database: restore!.database });
    expect(await tableDigests(mesh.databaseUrl(tenant!.database), schemas)).toEqual(before);
    // Every key, foreign key and index as it was, and nothing of the load left behind.
    expect(await schemaShape(mesh.databaseUrl(tenant!.database), schemas)).toEqual(shape);
    expect(await mesh.sql(tenant!.database, "select nspname from pg_namespace where nspname = 'tenantry_restore'")).toEqual([]);
    // ANALYZEd, the indexed expressions too (once their indexes were built).
    const analyzed = await mesh.sql(tenant!.database, "select distinct tablename from pg_stats where schemaname = any($1) and tablename in ('entries', 'users_email') order by 1", [schemas]);
    expect(analyzed).toEqual([{ tablename: "entries" }, { tablename: "users_email" }]);
    await eventually(async () => (await titles(tenantId)).join() === "one,three,two");
    // The replaced database is kept, refusing connections.
    const [kept] = await mesh.sql<{ datallowconn: boolean }>("postgres", "select datallowconn from pg_database where datname = $1", [previous]);
    expect(kept?.datallowconn).toBe(false);
    // Signing in still works: the restored keys are the tenant's own.
    expect(await mesh.login(tenantId, owner)).toMatch(/^ey/);
  });

  it("undoes an in-place restore while the replaced database is kept", async () => {
    const tenantId = await tenantWithEntries(["kept"]);
    const { backup } = await backups.createBackup({ tenantId });
    await mesh.entries.createEntry({ title: "written later" }, headers(tenantId));
    const previous = await databaseOf(tenantId);
    const { restore } = await backups.restoreBackup({ backupId: backup!.backupId });
    await eventually(async () => (await titles(tenantId)).join() === "kept");

    const { restore: undone, tenant } = await backups.undoRestore({ tenantId });
    expect(undone).toMatchObject({ restoreId: restore!.restoreId, state: RestoreState.UNDONE });
    expect(tenant).toMatchObject({ status: TenantStatus.ACTIVE, database: previous });
    await eventually(async () => (await titles(tenantId)).join() === "kept,written later");
    expect(await mesh.sql("postgres", "select 1 from pg_database where datname = $1", [restore!.database])).toEqual([]);
    const [reopened] = await mesh.sql<{ datallowconn: boolean }>("postgres", "select datallowconn from pg_database where datname = $1", [previous]);
    expect(reopened?.datallowconn).toBe(true);
    expect((await failure(backups.undoRestore({ tenantId }))).code).toBe(Code.NotFound);
  });

  it("clones a tenant: its own role and database, users who sign in as before, tokens of the source refused", async () => {
    const source = await tenantWithEntries(["shared history"]);
    const sourceToken = await mesh.login(source, owner);
    const { backup } = await backups.createBackup({ tenantId: source });
    const cloneId = mesh.uniqueTenantId("clone");
    const started = performance.now();
    const { restore, tenant } = await backups.restoreBackup({ backupId: backup!.backupId, targetTenantId: cloneId, tier: Tier.PREMIUM });
    console.info(`clone of a small tenant: ${(performance.now() - started).toFixed(0)} ms`);
    expect(restore).toMatchObject({ kind: RestoreKind.CLONE, state: RestoreState.SUCCEEDED, tenantId: cloneId });
    expect(tenant).toMatchObject({ tenantId: cloneId, status: TenantStatus.ACTIVE, tier: Tier.PREMIUM, database: `tenant_${cloneId.replaceAll("-", "_")}` });
    const [owned] = await mesh.sql<{ owner: string }>("postgres", "select pg_get_userbyid(datdba) as owner from pg_database where datname = $1", [tenant!.database]);
    expect(owned?.owner).toBe(tenant!.database);

    const cloneToken = await mesh.login(cloneId, owner);
    // Calls with the users' own tokens.
    const plain = mesh.client("backend", EntryService, []);
    const { entries } = await plain.listEntries({}, headers(cloneId, cloneToken));
    expect(entries.map((e) => e.title)).toEqual(["shared history"]);
    await plain.createEntry({ title: "only in the clone" }, headers(cloneId, cloneToken));
    expect(await titles(source)).toEqual(["shared history"]);
    // Tokens name their tenant (tid), and each side signs with keys of its own.
    for (const [tenant, token] of [[cloneId, sourceToken], [source, cloneToken]] as const) {
      const refused = await failure(plain.listEntries({}, headers(tenant, token)));
      expect(refused.code).toBe(Code.PermissionDenied);
      expect(refused.rawMessage).toMatch(/another tenant/);
    }
    const auth = mesh.client("auth", AuthService, []);
    const [sourceKeys, cloneKeys] = await Promise.all([auth.getJwks({}, headers(source)), auth.getJwks({}, headers(cloneId))]);
    const kids = (response: typeof sourceKeys) => (JSON.parse(response.jwks) as { keys: { kid: string }[] }).keys.map((k) => k.kid);
    expect(kids(cloneKeys).filter((kid) => kids(sourceKeys).includes(kid))).toEqual([]);

    const ledger = await mesh.sql(mesh.platformDatabase, "select service from platform.tenant_schema_versions where tenant_id = $1 order by 1", [cloneId]);
    expect(ledger).toEqual(schemas.map((service) => ({ service })));
    expect((await failure(backups.restoreBackup({ backupId: backup!.backupId, targetTenantId: cloneId }))).code).toBe(Code.AlreadyExists);
  });
});

