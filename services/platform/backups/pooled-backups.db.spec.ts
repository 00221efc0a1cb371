import { Code, type Client } from "@connectrpc/connect";
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BackupService, BackupState, RestoreKind, RestoreState, VerifyResult } from "../../../gen/tenantry/platform/v1/backup_service_pb.js";
import { Placement, TenantStatus } from "../../../gen/tenantry/platform/v1/platform_service_pb.js";
import { TenantBackupService } from "../../../gen/tenantry/selfserve/v1/tenant_backup_service_pb.js";
import { operatorCredentialInterceptor, tenantIdHeader } from "../../mesh/index.ts";
import { failure } from "../../testing/failure.ts";
import { schemaShape } from "../../testing/schema-shape.ts";
import { tableDigests } from "../../testing/table-digests.ts";
import { startTestMesh, type TestMesh } from "../../testing/test-mesh.ts";
import { finalBackupLabel } from "../lifecycle/offboarding-steps.ts";

const services = ["auth", "backend"];
const owner = { email: "owner@example.com", password: "correct horse battery" };

let mesh: TestMesh;
let backups: Client<typeof BackupService>;
beforeAll(async () => {
  mesh = await startTestMesh({
    services: ["auth", "backend"],
    // Offboarded tenants are purged at once.
    platformEnv: { TENANTRY_OFFBOARDING_GRACE_MS: "0" },
    // Routes are trusted for minutes: a switch of schemas must reach the services through the change feed.
    tenantServiceEnv: { TENANTRY_TENANT_CACHE_TTL_MS: "600000", TENANTRY_TENANT_WATCHED_TTL_MS: "600000" },
  });
  backups = mesh.client("platform", BackupService, [operatorCredentialInterceptor(mesh.operatorToken)]);
});
afterAll(() => mesh?.stop());

const headers = (tenantId: string, token?: string) => ({ headers: { [tenantIdHeader]: tenantId, ...(token === undefined ? {} : { authorization: `Bearer ${token}` }) } });
const underscored = (tenantId: string) => tenantId.replaceAll("-", "_");
const roleOf = (tenantId: string) => `tenant_${underscored(tenantId)}`;
const basePrefix = (tenantId: string) => `t_${underscored(tenantId)}_`;

/** A tenant of a placement with its owner and a few entries. */
async function tenantWithEntries(placement: Placement, titles: string[]): Promise<{ tenantId: string; database: string }> {
  const { tenantId, database } = await mesh.createTenant({ owner, placement });
  for (const title of titles) {
    await mesh.entries.createEntry({ title, tags: ["backup"] }, headers(tenantId));
  }
  return { tenantId, database };
}

async function titles(tenantId: string): Promise<string[]> {
  const { entries } = await mesh.entries.listEntries({ pageSize: 100 }, headers(tenantId));
  return entries.map((e) => e.title).sort();
}

/** Polls until `check` holds (a change reaching the services through the feed). */
async function eventually(check: () => Promise<boolean>, limitMs = 10_000): Promise<void> {
  const deadline = Date.now() + limitMs;
  while (!(await check().catch(() => false))) {
    if (Date.now() > deadline) {
      throw new Error(`not within ${limitMs} ms`);
    }
    await sleep(25);
  }
}

/** Where a tenant's data is now: its database, and its schemas' prefix (empty for a dedicated tenant). */
async function whereIs(tenantId: string): Promise<{ database: string; prefix: string; placement: Placement }> {
  const { route } = await mesh.platformMeshClient.resolveTenant({ tenantId });
  return { database: route!.database, prefix: route!.schemaPrefix, placement: route!.placement };
}

/** Every table's digest of a tenant's service schemas, by `service.table` whatever its placement. */
async function digestsOf(tenantId: string, only = services): Promise<Record<string, string>> {
  const { database, prefix } = await whereIs(tenantId);
  const found = await tableDigests(mesh.databaseUrl(database), only.map((s) => prefix + s));
  return Object.fromEntries(Object.entries(found).map(([name, digest]) => [name.slice(prefix.length), digest]));
}

/** The schemas a pooled tenant's role owns in its pool database. */
async function ownedSchemas(tenantId: string, database: string): Promise<string[]> {
  const rows = await mesh.sql<{ nspname: string }>(database, "select nspname from pg_namespace where nspowner = (select oid from pg_roles where rolname = $1) order by 1", [roleOf(tenantId)]);
  return rows.map((r) => r.nspname);
}

/** Whether the tenant's role may use a schema. */
async function mayUse(tenantId: string, database: string, schema: string): Promise<boolean> {
  const [row] = await mesh.sql<{ usage: boolean }>(database, "select has_schema_privilege($1, $2, 'usage') as usage", [roleOf(tenantId), schema]);
  return row!.usage;
}

describe("a pooled tenant's backup", () => {
  it("holds its own schemas and large objects only, none of its pool neighbours', named by service, and verifies", async () => {
    const tenant = await tenantWithEntries(Placement.POOLED, ["mine one", "mine two"]);
    const neighbour = await tenantWithEntries(Placement.POOLED, ["theirs"]);
    expect(neighbour.database).toBe(tenant.database);
    // A large object of the neighbour's in the shared database is no reason to refuse the tenant's backup.
    await mesh.sql(tenant.database, `set role ${roleOf(neighbour.tenantId)}; select lo_from_bytea(0, 'blob'::bytea); reset role`);
    const before = await digestsOf(tenant.tenantId);
    const { backup } = await backups.createBackup({ tenantId: tenant.tenantId, label: "pooled" });
    expect(backup).toMatchObject({ tenantId: tenant.tenantId, state: BackupState.SUCCEEDED, failureReason: "" });
    expect(backup!.tables.map((t) => t.name).sort()).toEqual(Object.keys(before).sort());
    expect(backup!.tables.every((t) => t.name.startsWith("auth.") || t.name.startsWith("backend."))).toBe(true);
    expect(backup!.tables.find((t) => t.name === "backend.entries")?.rows).toBe(2n);
    expect(backup!.tables.find((t) => t.name === "auth.users")?.rows).toBe(1n);
    expect(backup!.schemaVersions.map((v) => v.service).sort()).toEqual(services);

    const { backup: verified } = await backups.verifyBackup({ backupId: backup!.backupId });
    expect(verified).toMatchObject({ verifyResult: VerifyResult.PASSED, verifyError: "" });

    // Its own large object is refused, as a dedicated tenant's is.
    await mesh.sql(tenant.database, `set role ${roleOf(tenant.tenantId)}; select lo_from_bytea(0, 'blob'::bytea); reset role`);
    const refused = await failure(backups.createBackup({ tenantId: tenant.tenantId }));
    expect(refused.code).toBe(Code.FailedPrecondition);
    expect(refused.rawMessage).toMatch(/has 1 large object\(s\) in its pool database/);
    expect(await titles(neighbour.tenantId)).toEqual(["theirs"]);
  });
});

describe("clones across placements", () => {
  it("of a pooled tenant are pooled by default, with its tables' digests, and dedicated when asked, each serving Login and entries", async () => {
    const source = await tenantWithEntries(Placement.POOLED, ["shared history", "more"]);
    const { backup } = await backups.createBackup({ tenantId: source.tenantId });
    const sourceBackend = await digestsOf(source.tenantId, ["backend"]);

    const pooledId = mesh.uniqueTenantId("pclone");
    const { restore, tenant } = await backups.restoreBackup({ backupId: backup!.backupId, targetTenantId: pooledId });
    expect(restore).toMatchObject({ kind: RestoreKind.CLONE, state: RestoreState.SUCCEEDED, tenantId: pooledId });
    expect(tenant).toMatchObject({ tenantId: pooledId, status: TenantStatus.ACTIVE, placement: Placement.POOLED });
    expect(await whereIs(pooledId)).toMatchObject({ placement: Placement.POOLED, prefix: basePrefix(pooledId) });
    expect(await ownedSchemas(pooledId, tenant!.database)).toEqual(services.map((s) => basePrefix(pooledId) + s));
    // Backend's tables as the source's (Auth's signing keys are the clone's own).
    expect(await digestsOf(pooledId, ["backend"])).toEqual(sourceBackend);
    expect(await mesh.login(pooledId, owner)).toMatch(/^ey/);
    expect(await titles(pooledId)).toEqual(["more", "shared history"]);

    const dedicatedId = mesh.uniqueTenantId("dclone");
    const { tenant: dedicated } = await backups.restoreBackup({ backupId: backup!.backupId, targetTenantId: dedicatedId, placement: Placement.DEDICATED });
    expect(dedicated).toMatchObject({ status: TenantStatus.ACTIVE, placement: Placement.DEDICATED, database: roleOf(dedicatedId) });
    expect(await digestsOf(dedicatedId, ["backend"])).toEqual(sourceBackend);
    expect(await mesh.login(dedicatedId, owner)).toMatch(/^ey/);
    await mesh.entries.createEntry({ title: "only in the clone" }, headers(dedicatedId));
    expect(await titles(dedicatedId)).toEqual(["more", "only in the clone", "shared history"]);
    expect(await titles(source.tenantId)).toEqual(["more", "shared history"]);
    const ledger = await mesh.sql(mesh.platformDatabase, "select service from platform.tenant_schema_versions where tenant_id = $1 order by 1", [dedicatedId]);
    expect(ledger).toEqual(services.map((service) => ({ service })));
  });

  it("of a dedicated tenant are pooled when asked: a NOLOGIN role, schemas in a pool database, Login and entries", async () => {
    const source = await tenantWithEntries(Placement.DEDICATED, ["from a database of its own"]);
    const { backup } = await backups.createBackup({ tenantId: source.tenantId });
    const sourceBackend = await digestsOf(source.tenantId, ["backend"]);
    const cloneId = mesh.uniqueTenantId("pooledclone");
    const { tenant } = await backups.restoreBackup({ backupId: backup!.backupId, targetTenantId: cloneId, placement: Placement.POOLED });
    expect(tenant).toMatchObject({ status: TenantStatus.ACTIVE, placement: Placement.POOLED, database: `${mesh.platformDatabase}_pool_1` });
    const [login] = await mesh.sql<{ rolcanlogin: boolean }>("postgres", "select rolcanlogin from pg_roles where rolname = $1", [roleOf(cloneId)]);
    expect(login?.rolcanlogin).toBe(false);
    expect(await ownedSchemas(cloneId, tenant!.database)).toEqual(services.map((s) => basePrefix(cloneId) + s));
    expect(await digestsOf(cloneId, ["backend"])).toEqual(sourceBackend);
    expect(await mesh.login(cloneId, owner)).toMatch(/^ey/);
    expect(await titles(cloneId)).toEqual(["from a database of its own"]);
    // Nothing of a load is left in the pool database.
    expect(await mesh.sql(tenant!.database, "select nspname from pg_namespace where nspname like '%tenantry\\_load' or nspname = 'tenantry_restore'")).toEqual([]);
  });
});

describe("an in-place restore of a pooled tenant", () => {
  it("loads a new generation of its schemas, switches to it, keeps the replaced one unusable, and is undone", async () => {
    const tenant = await tenantWithEntries(Placement.POOLED, ["one", "two"]);
    const neighbour = await tenantWithEntries(Placement.POOLED, ["next door"]);
    const base = basePrefix(tenant.tenantId);
    const before = await digestsOf(tenant.tenantId);
    const shape = await schemaShape(mesh.databaseUrl(tenant.database), services.map((s) => base + s));
    const { backup } = await backups.createBackup({ tenantId: tenant.tenantId });
    await mesh.entries.createEntry({ title: "after the backup" }, headers(tenant.tenantId));

    const { restore, tenant: restored } = await backups.restoreBackup({ backupId: backup!.backupId });
    expect(restore).toMatchObject({ kind: RestoreKind.IN_PLACE, state: RestoreState.SUCCEEDED, database: tenant.database, previousDatabase: tenant.database });
    expect(restored).toMatchObject({ status: TenantStatus.ACTIVE, database: tenant.database, placement: Placement.POOLED });
    const next = `${base}r2__`;
    expect(await whereIs(tenant.tenantId)).toMatchObject({ prefix: next, database: tenant.database });
    expect(await digestsOf(tenant.tenantId)).toEqual(before);
    // Keys, foreign keys and indexes as they were (named in the new schemas).
    const restoredShape = await schemaShape(mesh.databaseUrl(tenant.database), services.map((s) => next + s));
    expect(restoredShape.map((line) => line.replaceAll(next, base))).toEqual(shape);
    expect(await ownedSchemas(tenant.tenantId, tenant.database)).toEqual([...services.map((s) => base + s), ...services.map((s) => next + s)].sort());
    expect(await mayUse(tenant.tenantId, tenant.database, `${base}backend`)).toBe(false);
    expect(await mayUse(tenant.tenantId, tenant.database, `${next}backend`)).toBe(true);
    await eventually(async () => (await titles(tenant.tenantId)).join() === "one,two");
    expect(await mesh.login(tenant.tenantId, owner)).toMatch(/^ey/);
    expect(await titles(neighbour.tenantId)).toEqual(["next door"]);
    const ledger = await mesh.sql(mesh.platformDatabase, "select service from platform.tenant_schema_versions where tenant_id = $1 order by 1", [tenant.tenantId]);
    expect(ledger).toEqual(services.map((service) => ({ service })));

    const { restore: undone, tenant: back } = await backups.undoRestore({ tenantId: tenant.tenantId });
    expect(undone).toMatchObject({ restoreId: restore!.restoreId, state: RestoreState.UNDONE });
    expect(back).toMatchObject({ status: TenantStatus.ACTIVE, database: tenant.database });
    expect(await whereIs(tenant.tenantId)).toMatchObject({ prefix: base });
    await eventually(async () => (await titles(tenant.tenantId)).join() === "after the backup,one,two");
    expect(await ownedSchemas(tenant.tenantId, tenant.database)).toEqual(services.map((s) => base + s));
    expect(await mayUse(tenant.tenantId, tenant.database, `${base}backend`)).toBe(true);
    expect((await failure(backups.undoRestore({ tenantId: tenant.tenantId }))).code).toBe(Code.NotFound);
    expect(await titles(neighbour.tenantId)).toEqual(["next door"]);
  });

  it("drops the replaced generation once TENANTRY_RESTORE_KEEP_MS is past, and offboarding drops every generation and takes a final backup that restores", async () => {
    const tenant = await tenantWithEntries(Placement.POOLED, ["kept a moment"]);
    const base = basePrefix(tenant.tenantId);
    const { backup } = await backups.createBackup({ tenantId: tenant.tenantId });
    // Two restores: the first generation is dropped when its keep ends, the second kept (and dropped by offboarding).
    await mesh.restartPlatform({ TENANTRY_RESTORE_KEEP_MS: "1" });
    await backups.restoreBackup({ backupId: backup!.backupId });
    await mesh.restartPlatform();
    await eventually(async () => (await ownedSchemas(tenant.tenantId, tenant.database)).every((s) => s.startsWith(`${base}r2__`)));
    expect(await ownedSchemas(tenant.tenantId, tenant.database)).toEqual(services.map((s) => `${base}r2__${s}`));
    await backups.restoreBackup({ backupId: backup!.backupId });
    // The free generation is the first again.
    expect(await whereIs(tenant.tenantId)).toMatchObject({ prefix: base });
    expect(await ownedSchemas(tenant.tenantId, tenant.database)).toHaveLength(4);
    await eventually(async () => (await titles(tenant.tenantId)).join() === "kept a moment");
    await mesh.entries.createEntry({ title: "before offboarding" }, headers(tenant.tenantId));

    const { tenant: deleted } = await mesh.platformClient.deleteTenant({ tenantId: tenant.tenantId });
    expect(deleted?.status).toBe(TenantStatus.DELETED);
    expect(await mesh.sql("postgres", "select 1 from pg_roles where rolname = $1", [roleOf(tenant.tenantId)])).toEqual([]);
    expect(await mesh.sql(tenant.database, "select nspname from pg_namespace where starts_with(nspname, $1)", [base])).toEqual([]);
    expect(await mesh.sql("postgres", "select 1 from pg_database where datname = $1", [tenant.database])).toHaveLength(1);
    const { backups: listed } = await backups.listBackups({ tenantId: tenant.tenantId });
    const final = listed.find((b) => b.label === finalBackupLabel);
    expect(final?.state).toBe(BackupState.SUCCEEDED);
    expect(deleted?.finalBackupId).toBe(final!.backupId);
    const cloneId = mesh.uniqueTenantId("afterlife");
    const { tenant: clone } = await backups.restoreBackup({ backupId: final!.backupId, targetTenantId: cloneId, placement: Placement.DEDICATED });
    expect(clone?.placement).toBe(Placement.DEDICATED);
    expect(await titles(cloneId)).toEqual(["before offboarding", "kept a moment"]);
  });

  it("is open to the tenant's admins (self-serve), as a dedicated tenant's", async () => {
    const tenant = await tenantWithEntries(Placement.POOLED, ["self-served"]);
    const token = await mesh.login(tenant.tenantId, owner);
    const selfServe = mesh.client("platform", TenantBackupService, []);
    const { backup } = await selfServe.createBackup({ label: "mine" }, headers(tenant.tenantId, token));
    expect(backup?.state).toBe(BackupState.SUCCEEDED);
    await mesh.entries.createEntry({ title: "later" }, headers(tenant.tenantId));
    const { restore } = await selfServe.restoreBackup({ backupId: backup!.backupId }, headers(tenant.tenantId, token));
    expect(restore?.state).toBe(RestoreState.SUCCEEDED);
    await eventually(async () => (await titles(tenant.tenantId)).join() === "self-served");
  });
});

describe("a damaged backup of a pooled tenant", () => {
  it("is refused: a pooled clone leaves no tenant, role or schemas, and the tenant restored in place keeps serving from its schemas", async () => {
    const tenant = await tenantWithEntries(Placement.POOLED, ["a", "b", "c"]);
    const { backup } = await backups.createBackup({ tenantId: tenant.tenantId });
    const entries = backup!.tables.findIndex((t) => t.name === "backend.entries");
    const file = path.join(mesh.sharedEnv.TENANTRY_DATA_DIR, "backups", tenant.tenantId, backup!.backupId, `table-${String(entries + 1).padStart(4, "0")}.copy.zst`);
    const bytes = await readFile(file);
    bytes[Math.floor(bytes.length / 2)]! ^= 0x01;
    await writeFile(file, bytes);

    const cloneId = mesh.uniqueTenantId("pdamaged");
    const cloned = await failure(backups.restoreBackup({ backupId: backup!.backupId, targetTenantId: cloneId }));
    expect(cloned.code).toBe(Code.FailedPrecondition);
    expect(cloned.rawMessage).toMatch(/\(backend\.entries\) of backup "[0-9a-f-]{36}" failed its integrity check/);
    expect((await failure(mesh.platformClient.getTenant({ tenantId: cloneId }))).code).toBe(Code.NotFound);
    expect(await mesh.sql("postgres", "select 1 from pg_roles where rolname = $1", [roleOf(cloneId)])).toEqual([]);
    expect(await mesh.sql(tenant.database, "select nspname from pg_namespace where starts_with(nspname, $1)", [basePrefix(cloneId)])).toEqual([]);

    const refused = await failure(backups.restoreBackup({ backupId: backup!.backupId }));
    expect(refused.code).toBe(Code.FailedPrecondition);
    expect(await whereIs(tenant.tenantId)).toMatchObject({ prefix: basePrefix(tenant.tenantId) });
    expect(await ownedSchemas(tenant.tenantId, tenant.database)).toEqual(services.map((s) => basePrefix(tenant.tenantId) + s));
    expect((await mesh.platformClient.getTenant({ tenantId: tenant.tenantId })).tenant?.status).toBe(TenantStatus.ACTIVE);
    expect(await titles(tenant.tenantId)).toEqual(["a", "b", "c"]);
  });
});
