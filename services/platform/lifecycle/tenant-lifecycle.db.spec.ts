import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BackupService, BackupState } from "../../../gen/tenantry/platform/v1/backup_service_pb.js";
import { AuditOutcome, TenantStatus, Tier } from "../../../gen/tenantry/platform/v1/platform_service_pb.js";
import { migrations as authMigrations } from "../../auth/migrations/index.ts";
import { migrations as backendMigrations } from "../../backend/migrations/index.ts";
import { operatorCredentialInterceptor } from "../../mesh/index.ts";
import { failure } from "../../testing/failure.ts";
import { tableDigests } from "../../testing/table-digests.ts";
import { startTestMesh, type TestMesh } from "../../testing/test-mesh.ts";

const schemas = ["auth", "backend"];

let mesh: TestMesh;
let backups: Client<typeof BackupService>;
beforeAll(async () => {
  mesh = await startTestMesh({
    // Routes are trusted for minutes: only the change feed can make a change seen quickly.
    tenantServiceEnv: { TENANTRY_TENANT_CACHE_TTL_MS: "600000", TENANTRY_TENANT_WATCHED_TTL_MS: "600000", TENANTRY_PLATFORM_TIMEOUT_MS: "1000" },
    platformEnv: { TENANTRY_OFFBOARDING_GRACE_MS: "0" },
  });
  backups = mesh.client("platform", BackupService, [operatorCredentialInterceptor(mesh.operatorToken)]);
});
afterAll(() => mesh?.stop());

/** Polls `check` until it holds; returns how long that took. Fails after `limitMs`. */
async function eventually(check: () => Promise<boolean>, limitMs = 5000): Promise<number> {
  const started = performance.now();
  while (!(await check())) {
    if (performance.now() - started > limitMs) {
      throw new Error(`not within ${limitMs} ms`);
    }
    await sleep(20);
  }
  return performance.now() - started;
}

const headers = (tenantId: string) => ({ headers: { "x-tenant-id": tenantId } });

/** What each service answers for the tenant now: "ok" or the error code. */
async function answers(tenantId: string): Promise<{ backend: string; auth: string }> {
  const backend = await mesh.entries.listEntries({}, headers(tenantId)).then(() => "ok", (e: unknown) => Code[ConnectError.from(e).code]);
  const auth = await mesh.auth.tenancy.directory.resolveActive(tenantId).then(() => "ok", (e: unknown) => Code[ConnectError.from(e).code]);
  return { backend, auth };
}

describe("suspension", () => {
  it("reaches every service through the change feed, and resuming serves the tenant again", async () => {
    const tenant = await mesh.createTenant();
    expect(await answers(tenant.tenantId)).toEqual({ backend: "ok", auth: "ok" });

    const { tenant: suspended } = await mesh.platformClient.suspendTenant({ tenantId: tenant.tenantId, reason: "unpaid invoice" });
    expect(suspended).toMatchObject({ status: TenantStatus.SUSPENDED, suspendedReason: "unpaid invoice" });
    const took = await eventually(async () => {
      const now = await answers(tenant.tenantId);
      return now.backend === "FailedPrecondition" && now.auth === "FailedPrecondition";
    });
    console.info(`suspension seen by Backend and Auth after ${took.toFixed(0)} ms`);
    const error = await failure(mesh.entries.listEntries({}, headers(tenant.tenantId)));
    expect(error.rawMessage).toMatch(/suspended/);
    // Suspending again changes nothing.
    expect((await mesh.platformClient.suspendTenant({ tenantId: tenant.tenantId })).tenant?.status).toBe(TenantStatus.SUSPENDED);

    await mesh.platformClient.resumeTenant({ tenantId: tenant.tenantId });
    await eventually(async () => (await answers(tenant.tenantId)).backend === "ok");
    expect(await answers(tenant.tenantId)).toEqual({ backend: "ok", auth: "ok" });
  });

  it("keeps working after Platform restarts, and serves cached tenants while Platform is down", async () => {
    const known = await mesh.createTenant();
    await mesh.entries.listEntries({}, headers(known.tenantId));
    const unknown = await mesh.createTenant();

    await mesh.stopPlatform();
    expect((await mesh.entries.listEntries({}, headers(known.tenantId))).entries).toEqual([]);
    const refused = await failure(mesh.entries.listEntries({}, headers(unknown.tenantId)));
    expect(refused.code).toBe(Code.Unavailable);

    await mesh.restartPlatform();
    // The services reconnect to the feed; a suspension reaches them again.
    await eventually(async () => (await answers(unknown.tenantId)).backend === "ok", 15_000);
    await mesh.entries.listEntries({}, headers(known.tenantId));
    await mesh.platformClient.suspendTenant({ tenantId: known.tenantId });
    await eventually(async () => (await answers(known.tenantId)).backend === "FailedPrecondition");
  });

  it("refuses what does not fit the status", async () => {
    const tenant = await mesh.createTenant();
    // Resuming an active tenant changes nothing.
    expect((await mesh.platformClient.resumeTenant({ tenantId: tenant.tenantId })).tenant?.status).toBe(TenantStatus.ACTIVE);
    await mesh.platformClient.deleteTenant({ tenantId: tenant.tenantId });
    expect((await failure(mesh.platformClient.suspendTenant({ tenantId: tenant.tenantId }))).code).toBe(Code.FailedPrecondition);
    expect((await failure(mesh.platformClient.resumeTenant({ tenantId: tenant.tenantId }))).code).toBe(Code.FailedPrecondition);
    expect((await failure(mesh.platformClient.suspendTenant({ tenantId: mesh.uniqueTenantId("ghost") }))).code).toBe(Code.NotFound);
    expect((await failure(mesh.platformClient.suspendTenant({ tenantId: tenant.tenantId, reason: "x".repeat(501) }))).code).toBe(Code.InvalidArgument);
  });
});

describe("updates", () => {
  it("changes the tier, which reaches the route with its limits", async () => {
    const tenant = await mesh.createTenant();
    const before = await mesh.platformMeshClient.resolveTenant({ tenantId: tenant.tenantId });
    expect(before.route).toMatchObject({ tier: Tier.STANDARD, maxUsers: 50, maxStorageBytes: 10n * 1024n ** 3n });
    const { tenant: updated } = await mesh.platformClient.updateTenant({
      tenantId: tenant.tenantId,
      tier: Tier.ENTERPRISE,
      displayName: "Renamed",
      updateMask: { paths: ["tier", "display_name"] },
    });
    expect(updated).toMatchObject({ tier: Tier.ENTERPRISE, displayName: "Renamed" });
    const after = await mesh.platformMeshClient.resolveTenant({ tenantId: tenant.tenantId });
    expect(after.route).toMatchObject({ tier: Tier.ENTERPRISE, maxUsers: 0, maxStorageBytes: 0n });
    await eventually(async () => (await mesh.backend.tenancy.directory.lookup(tenant.tenantId)).tier === Tier.ENTERPRISE);
  });

  it("refuses an empty or unknown mask", async () => {
    const tenant = await mesh.createTenant();
    expect((await failure(mesh.platformClient.updateTenant({ tenantId: tenant.tenantId, displayName: "x" }))).code).toBe(Code.InvalidArgument);
    expect((await failure(mesh.platformClient.updateTenant({ tenantId: tenant.tenantId, updateMask: { paths: ["database"] } }))).code).toBe(Code.InvalidArgument);
  });

  it("refuses a display name with a control character (PostgreSQL would refuse a NUL) as INVALID_ARGUMENT", async () => {
    const tenant = await mesh.createTenant();
    const error = await failure(mesh.platformClient.updateTenant({ tenantId: tenant.tenantId, displayName: "a\u0000b", updateMask: { paths: ["display_name"] } }));
    expect([error.code, error.rawMessage]).toEqual([Code.InvalidArgument, "display_name has a control character (U+0000); use printable text on one line"]);
    expect((await failure(mesh.platformClient.createTenant({ tenantId: mesh.uniqueTenantId("nul"), displayName: "a\u0000b" }))).code).toBe(Code.InvalidArgument);
  });
});

describe("offboarding", () => {
  it("takes a final backup that restores as a new tenant with the data as it was, then drops the database and role at once with no grace period, keeping the record", async () => {
    const owner = { email: "owner@example.com", password: "correct horse battery" };
    const tenant = await mesh.createTenant({ owner });
    await mesh.entries.createEntry({ title: "keep me", tags: ["export"] }, headers(tenant.tenantId));
    await mesh.entries.listEntries({}, headers(tenant.tenantId));
    const before = await tableDigests(mesh.databaseUrl(tenant.database), schemas);

    const { tenant: deleted } = await mesh.platformClient.deleteTenant({ tenantId: tenant.tenantId });
    expect(deleted).toMatchObject({ status: TenantStatus.DELETED, exportPath: "" });
    const { backup } = await backups.getBackup({ backupId: deleted!.finalBackupId });
    expect(backup).toMatchObject({ tenantId: tenant.tenantId, state: BackupState.SUCCEEDED, label: "final backup before offboarding" });
    expect(backup!.schemaVersions.map(({ service, version }) => ({ service, version }))).toEqual([
      { service: "auth", version: authMigrations.at(-1)!.name },
      { service: "backend", version: backendMigrations.at(-1)!.name },
    ]);
    expect(backup!.tables.find((t) => t.name === "backend.entries")?.rows).toBe(1n);

    expect(await mesh.sql("postgres", "select 1 from pg_database where datname = $1", [tenant.database])).toEqual([]);
    expect(await mesh.sql("postgres", "select 1 from pg_roles where rolname = $1", [tenant.database])).toEqual([]);
    await eventually(async () => (await answers(tenant.tenantId)).backend === "FailedPrecondition");
    const { tenant: record } = await mesh.platformClient.getTenant({ tenantId: tenant.tenantId });
    expect(record).toMatchObject({ status: TenantStatus.DELETED, finalBackupId: backup!.backupId });
    expect((await failure(mesh.platformClient.createTenant({ tenantId: tenant.tenantId }))).code).toBe(Code.AlreadyExists);

    // The tenant is gone; its final backup restores as a new one, every table as it was.
    const revivedId = mesh.uniqueTenantId("revived");
    const { tenant: revived } = await backups.restoreBackup({ backupId: backup!.backupId, targetTenantId: revivedId });
    const after = await tableDigests(mesh.databaseUrl(revived!.database), schemas);
    // A clone gets signing keys of its own and none of the source's sessions; the rest is the source's.
    const copied = (digests: Record<string, string>) => Object.fromEntries(Object.entries(digests).filter(([table]) => !["auth.signing_keys", "auth.refresh_tokens"].includes(table)));
    expect(copied(after)).toEqual(copied(before));
    expect(Object.keys(copied(before))).toContain("backend.entries");
    expect(await mesh.login(revivedId, owner)).toMatch(/^ey/);
  });

  it("with a grace period revokes the login at once and drops the rest when it is over", async () => {
    // Long enough that DeleteTenant (a final backup first) answers within it on a loaded machine.
    await mesh.restartPlatform({ TENANTRY_OFFBOARDING_GRACE_MS: "5000", TENANTRY_OFFBOARDING_CHECK_INTERVAL_MS: "200" });
    try {
      const tenant = await mesh.createTenant();
      const { route } = await mesh.platformMeshClient.resolveTenant({ tenantId: tenant.tenantId });
      const { tenant: offboarding } = await mesh.platformClient.deleteTenant({ tenantId: tenant.tenantId });
      expect(offboarding?.status).toBe(TenantStatus.OFFBOARDING);
      expect(offboarding?.purgeTime).toBeDefined();
      const login = new pg.Client({ host: route!.host, port: route!.port, user: route!.user, password: route!.password, database: tenant.database });
      expect(await login.connect().then(() => "connected", (e: { code?: string }) => e.code)).toBe("28000");
      await login.end().catch(() => undefined);
      expect(await mesh.sql("postgres", "select 1 from pg_database where datname = $1", [tenant.database])).toHaveLength(1);
      await eventually(async () => (await mesh.platformClient.getTenant({ tenantId: tenant.tenantId })).tenant?.status === TenantStatus.DELETED, 30_000);
      expect(await mesh.sql("postgres", "select 1 from pg_database where datname = $1", [tenant.database])).toEqual([]);
    } finally {
      await mesh.restartPlatform();
    }
  });

  it("finishes an offboarding that stopped half-way when Platform starts again", async () => {
    const tenant = await mesh.createTenant();
    await mesh.restartPlatform({}, {
      afterOffboardingStep: (_tenantId, step) => {
        if (step === "export") {
          throw new Error("stopped after the export");
        }
      },
    });
    try {
      expect((await failure(mesh.platformClient.deleteTenant({ tenantId: tenant.tenantId }))).code).toBe(Code.Internal);
      const { tenant: stopped } = await mesh.platformClient.getTenant({ tenantId: tenant.tenantId });
      expect(stopped?.status).toBe(TenantStatus.OFFBOARDING);
    } finally {
      await mesh.restartPlatform();
    }
    await eventually(async () => (await mesh.platformClient.getTenant({ tenantId: tenant.tenantId })).tenant?.status === TenantStatus.DELETED);
    expect(await mesh.sql("postgres", "select 1 from pg_database where datname = $1", [tenant.database])).toEqual([]);
    expect(await mesh.sql("postgres", "select 1 from pg_roles where rolname = $1", [tenant.database])).toEqual([]);
    // The final backup taken before the stop is the one kept: none is taken twice.
    const { tenant: deleted } = await mesh.platformClient.getTenant({ tenantId: tenant.tenantId });
    const { backups: taken } = await backups.listBackups({ tenantId: tenant.tenantId });
    expect(taken.map((b) => [b.backupId, b.state])).toEqual([[deleted!.finalBackupId, BackupState.SUCCEEDED]]);
  });

  it("deletes a FAILED tenant at once", async () => {
    const tenantId = mesh.uniqueTenantId("failed");
    const database = `tenant_${tenantId.replaceAll("-", "_")}`;
    await mesh.sql("postgres", `create database ${pg.escapeIdentifier(database)}`);
    await failure(mesh.platformClient.createTenant({ tenantId }));
    await mesh.sql("postgres", `drop database ${pg.escapeIdentifier(database)}`);
    const { tenant } = await mesh.platformClient.deleteTenant({ tenantId });
    expect(tenant?.status).toBe(TenantStatus.DELETED);
  });
});

describe("audit log", () => {
  it("records who did what to a tenant, and how it ended, newest first", async () => {
    const tenant = await mesh.createTenant();
    await mesh.platformClient.suspendTenant({ tenantId: tenant.tenantId, reason: "audit" });
    await mesh.platformClient.resumeTenant({ tenantId: tenant.tenantId });
    await mesh.platformClient.deleteTenant({ tenantId: tenant.tenantId });
    await failure(mesh.platformClient.resumeTenant({ tenantId: tenant.tenantId }));

    const { events } = await mesh.platformClient.listAuditEvents({ tenantId: tenant.tenantId });
    expect(events.map((e) => [e.action, e.actor, AuditOutcome[e.outcome]])).toEqual([
      ["ResumeTenant", "operator", "FAILED"],
      ["DeleteTenant", "operator", "SUCCEEDED"],
      ["PurgeTenant", "platform", "SUCCEEDED"],
      ["ResumeTenant", "operator", "SUCCEEDED"],
      ["SuspendTenant", "operator", "SUCCEEDED"],
      ["CreateTenant", "operator", "SUCCEEDED"],
    ]);
    expect(JSON.parse(events[0]!.detail)).toMatchObject({ code: "FailedPrecondition" });
    expect(JSON.parse(events[4]!.detail)).toEqual({ reason: "audit" });

    const first = await mesh.platformClient.listAuditEvents({ pageSize: 2 });
    const second = await mesh.platformClient.listAuditEvents({ pageSize: 2, pageToken: first.nextPageToken });
    expect(first.events).toHaveLength(2);
    expect(second.events[0]!.id).toBeLessThan(first.events[1]!.id);
  });
});
