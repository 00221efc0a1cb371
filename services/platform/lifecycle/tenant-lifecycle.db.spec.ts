import { Code, ConnectError } from "@connectrpc/connect";
import { readFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { gunzipSync } from "node:zlib";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuditOutcome, TenantStatus, Tier } from "../../../gen/tenantry/platform/v1/platform_service_pb.js";
import { migrations as authMigrations } from "../../auth/migrations/index.ts";
import { migrations as backendMigrations } from "../../backend/migrations/index.ts";
import { failure } from "../../testing/failure.ts";
import { startTestMesh, type TestMesh } from "../../testing/test-mesh.ts";

let mesh: TestMesh;
beforeAll(async () => {
  mesh = await startTestMesh({
    // Routes are trusted for minutes: only the change feed can make a change seen quickly.
    tenantServiceEnv: { TENANTRY_TENANT_CACHE_TTL_MS: "600000", TENANTRY_TENANT_WATCHED_TTL_MS: "600000", TENANTRY_PLATFORM_TIMEOUT_MS: "1000" },
    platformEnv: { TENANTRY_OFFBOARDING_GRACE_MS: "0" },
  });
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
});

describe("offboarding", () => {
  it("exports every service schema, then drops the database and role at once with no grace period, keeping the record", async () => {
    const tenant = await mesh.createTenant();
    const { entry } = await mesh.entries.createEntry({ title: "keep me", tags: ["export"] }, headers(tenant.tenantId));
    await mesh.entries.listEntries({}, headers(tenant.tenantId));

    const { tenant: deleted } = await mesh.platformClient.deleteTenant({ tenantId: tenant.tenantId });
    expect(deleted?.status).toBe(TenantStatus.DELETED);
    expect(deleted?.exportPath).toMatch(new RegExp(`exports/${tenant.tenantId}-.*\\.ndjson\\.gz$`));

    const lines = gunzipSync(await readFile(deleted!.exportPath)).toString("utf8").trim().split("\n").map((l) => JSON.parse(l));
    expect(lines[0]).toMatchObject({ format: "tenantry-export/1", tenantId: tenant.tenantId, versions: { auth: authMigrations.at(-1)!.name, backend: backendMigrations.at(-1)!.name } });
    expect(lines).toContainEqual(expect.objectContaining({ table: "backend.entries", columns: expect.arrayContaining([{ name: "title", type: "character varying(200)" }]) }));
    expect(lines).toContainEqual({ t: "backend.entries", row: expect.objectContaining({ id: entry!.id, title: "keep me", tags: ["export"] }) });
    expect(lines.filter((l) => l.t === "backend.mikro_orm_migrations")).toHaveLength(backendMigrations.length);

    expect(await mesh.sql("postgres", "select 1 from pg_database where datname = $1", [tenant.database])).toEqual([]);
    expect(await mesh.sql("postgres", "select 1 from pg_roles where rolname = $1", [tenant.database])).toEqual([]);
    await eventually(async () => (await answers(tenant.tenantId)).backend === "FailedPrecondition");
    const { tenant: record } = await mesh.platformClient.getTenant({ tenantId: tenant.tenantId });
    expect(record?.status).toBe(TenantStatus.DELETED);
    expect((await failure(mesh.platformClient.createTenant({ tenantId: tenant.tenantId }))).code).toBe(Code.AlreadyExists);
  });

  it("with a grace period revokes the login at once and drops the rest when it is over", async () => {
    await mesh.restartPlatform({ TENANTRY_OFFBOARDING_GRACE_MS: "1500", TENANTRY_OFFBOARDING_CHECK_INTERVAL_MS: "200" });
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
      await eventually(async () => (await mesh.platformClient.getTenant({ tenantId: tenant.tenantId })).tenant?.status === TenantStatus.DELETED, 10_000);
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
