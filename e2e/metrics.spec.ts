import { Code } from "@connectrpc/connect";
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BackupService, VerifyResult } from "../gen/tenantry/platform/v1/backup_service_pb.js";
import { Placement, Tier } from "../gen/tenantry/platform/v1/platform_service_pb.js";
import { operatorCredentialInterceptor } from "../services/mesh/index.ts";
import { failure } from "../services/testing/failure.ts";
import { startTestMesh, type TestMesh } from "../services/testing/test-mesh.ts";

const tenantSeries = 3;
let mesh: TestMesh;
beforeAll(async () => {
  // Read once, when the process's telemetry starts with the mesh.
  process.env.TENANTRY_METRICS_TENANT_SERIES = String(tenantSeries);
  mesh = await startTestMesh();
});
afterAll(async () => {
  await mesh?.stop();
});

async function scrape(port: number): Promise<string[]> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toMatch(/^text\/plain/);
  return (await res.text()).split("\n");
}

describe("per-tenant metrics", () => {
  it("give at most TENANTRY_METRICS_TENANT_SERIES series, the rest counted together, and none to made-up tenants", async () => {
    const tenants = [];
    for (let i = 0; i < tenantSeries + 2; i++) {
      tenants.push((await mesh.createTenant()).tenantId);
    }
    for (const tenantId of tenants) {
      await mesh.entries.listEntries({}, { headers: { "x-tenant-id": tenantId } });
    }
    const madeUp = mesh.uniqueTenantId("nobody");
    expect((await failure(mesh.entries.listEntries({}, { headers: { "x-tenant-id": madeUp } }))).code).toBe(Code.NotFound);

    const lines = (await scrape(mesh.backend.httpPort)).filter((l) => l.startsWith("tenantry_tenant_call_duration_count{"));
    const labelled = new Set(lines.flatMap((l) => /tenant="([^"]+)"/.exec(l)?.[1] ?? []));
    expect(labelled.has(madeUp)).toBe(false);
    expect(labelled.size).toBe(tenantSeries);
    const counted = lines.reduce((sum, l) => sum + Number(l.split(" ").at(-1)), 0);
    // Every call is counted, in its tenant's series or the overflow one (Auth's GetJwks calls share this process's meter).
    expect(counted).toBeGreaterThanOrEqual(tenants.length);
    expect(lines.some((l) => l.includes('otel_metric_overflow="true"'))).toBe(true);
  });

  it("count calls by service, method and code on every port, whatever the tenant", async () => {
    const lines = await scrape(mesh.backend.httpPort);
    const listed = lines.find((l) => l.startsWith("rpc_server_call_duration_count{") && l.includes('rpc_method="ListEntries"') && l.includes('rpc_grpc_status_code="OK"'));
    expect(Number(listed?.split(" ").at(-1))).toBeGreaterThanOrEqual(tenantSeries + 2);
    const refused = lines.find((l) => l.startsWith("rpc_server_call_duration_count{") && l.includes('rpc_method="ListEntries"') && l.includes('rpc_grpc_status_code="NOT_FOUND"'));
    expect(Number(refused?.split(" ").at(-1))).toBeGreaterThanOrEqual(1);
    expect(lines.some((l) => /^rpc_server_call_duration_bucket\{.*le="0\.005"/.test(l))).toBe(true);
  });
});

describe("connection and fleet metrics", () => {
  it("show the connection budget and Platform's tenants by status", async () => {
    const backend = await scrape(mesh.backend.httpPort);
    const value = (lines: string[], prefix: string) => Number(lines.find((l) => l.startsWith(prefix))?.split(" ").at(-1));
    expect(value(backend, 'tenantry_db_connections_open{service="backend"}')).toBeGreaterThan(0);
    expect(value(backend, 'tenantry_db_connections_in_use{service="backend"}')).toBe(0);
    expect(value(backend, 'tenantry_db_connections_waiting{service="backend"}')).toBe(0);
    expect(value(backend, 'tenantry_db_cold_opens_total{service="backend"}')).toBeGreaterThanOrEqual(tenantSeries + 2);

    const tenantId = (await mesh.createTenant()).tenantId;
    await mesh.platformClient.suspendTenant({ tenantId });
    const platform = await scrape(mesh.platform.httpPort);
    expect(value(platform, 'tenantry_tenants{status="suspended"}')).toBe(1);
    expect(value(platform, 'tenantry_tenants{status="active"}')).toBe(tenantSeries + 2);
    expect(value(platform, 'tenantry_tenants{status="failed"}')).toBe(0);
    expect(value(platform, 'tenantry_fleet_tenants{service="backend",state="current"}')).toBe(tenantSeries + 3);
    expect(value(platform, 'tenantry_fleet_tenants{service="backend",state="behind"}')).toBe(0);
  });
});

describe("backup metrics", () => {
  const headers = (tenantId: string) => ({ headers: { "x-tenant-id": tenantId } });
  const value = (lines: string[], series: string) => {
    const line = lines.find((l) => l.startsWith(`${series} `));
    expect(line, `${series} in /metrics`).toBeDefined();
    return Number(line!.split(" ").at(-1));
  };

  it("count tenants by tier and how old their newest backup is, with no series per tenant", async () => {
    const backups = mesh.client("platform", BackupService, [operatorCredentialInterceptor(mesh.operatorToken)]);
    const [fresh, stale, never] = [mesh.uniqueTenantId("fresh"), mesh.uniqueTenantId("stale"), mesh.uniqueTenantId("never")];
    for (const tenantId of [fresh, stale, never]) {
      await mesh.platformClient.createTenant({ tenantId, tier: Tier.ENTERPRISE });
    }
    const { backup } = await backups.createBackup({ tenantId: fresh });
    const { backup: old } = await backups.createBackup({ tenantId: stale });
    // As if stale's backup had finished three days ago, and never had been made a week and a day ago.
    await mesh.sql(mesh.platformDatabase, "update platform.backups set finished_at = now() - interval '3 days' where id = $1", [old!.backupId]);
    await mesh.sql(mesh.platformDatabase, "update platform.tenants set created_at = now() - interval '8 days' where id = $1", [never]);

    const lines = await scrape(mesh.platform.httpPort);
    const within = (le: string) => value(lines, `tenantry_backup_age_tenants{tier="enterprise",le="${le}"}`);
    expect([within("3600"), within("21600"), within("86400"), within("172800"), within("604800"), within("+Inf")]).toEqual([1, 1, 1, 1, 2, 3]);
    expect(value(lines, 'tenantry_backup_age_max_seconds{tier="enterprise"}')).toBeGreaterThanOrEqual(8 * 86_400);
    // The other tenants of this file are standard and never backed up: all within an hour of their creation.
    expect(value(lines, 'tenantry_backup_age_tenants{tier="standard",le="3600"}')).toBe(value(lines, 'tenantry_backup_age_tenants{tier="standard",le="+Inf"}'));
    expect(value(lines, 'tenantry_backup_age_tenants{tier="premium",le="+Inf"}')).toBe(0);
    expect(value(lines, 'tenantry_backups_stored{tier="enterprise",verify="never"}')).toBe(2);
    expect(value(lines, 'tenantry_backups_stored_bytes{tier="enterprise"}')).toBe(Number(backup!.sizeBytes + old!.sizeBytes));
    expect(value(lines, 'tenantry_backup_duration_count{tier="enterprise"}')).toBe(2);
    expect(value(lines, 'tenantry_backup_size_count{tier="enterprise"}')).toBe(2);
    expect(value(lines, 'tenantry_backup_size_sum{tier="enterprise"}')).toBe(Number(backup!.sizeBytes + old!.sizeBytes));
    expect(lines.filter((l) => l.startsWith("tenantry_backup") && (l.includes(fresh) || l.includes(stale) || l.includes(never)))).toEqual([]);
  });

  it("count failed backups, restores by kind and result, and verification drills that fail", async () => {
    const backups = mesh.client("platform", BackupService, [operatorCredentialInterceptor(mesh.operatorToken)]);
    const tenantId = mesh.uniqueTenantId("drill");
    await mesh.platformClient.createTenant({ tenantId, tier: Tier.PREMIUM });
    await mesh.entries.createEntry({ title: "kept" }, headers(tenantId));
    const { backup } = await backups.createBackup({ tenantId });
    await backups.restoreBackup({ backupId: backup!.backupId });
    await backups.undoRestore({ tenantId });
    await backups.restoreBackup({ backupId: backup!.backupId, targetTenantId: mesh.uniqueTenantId("copy") });
    expect((await backups.verifyBackup({ backupId: backup!.backupId })).backup?.verifyResult).toBe(VerifyResult.PASSED);

    // A damaged file: the drill fails, and so does a clone of it (rolled back).
    const entries = backup!.tables.findIndex((t) => t.name === "backend.entries");
    const file = path.join(mesh.sharedEnv.TENANTRY_DATA_DIR, "backups", tenantId, backup!.backupId, `table-${String(entries + 1).padStart(4, "0")}.copy.zst`);
    const bytes = await readFile(file);
    bytes[Math.floor(bytes.length / 2)]! ^= 0x01;
    await writeFile(file, bytes);
    expect((await backups.verifyBackup({ backupId: backup!.backupId })).backup?.verifyResult).toBe(VerifyResult.FAILED);
    expect((await failure(backups.restoreBackup({ backupId: backup!.backupId, targetTenantId: mesh.uniqueTenantId("damaged") }))).code).toBe(Code.FailedPrecondition);

    // A backup refused while it runs: the database holds a large object.
    const { tenant } = await mesh.platformClient.getTenant({ tenantId });
    await mesh.sql(tenant!.database, "select lo_create(0)");
    expect((await failure(backups.createBackup({ tenantId }))).code).toBe(Code.FailedPrecondition);

    const lines = await scrape(mesh.platform.httpPort);
    expect(value(lines, 'tenantry_backup_failures_total{tier="premium"}')).toBe(1);
    expect(value(lines, 'tenantry_restores_total{kind="in_place",result="succeeded"}')).toBe(1);
    expect(value(lines, 'tenantry_restores_total{kind="undo",result="succeeded"}')).toBe(1);
    expect(value(lines, 'tenantry_restores_total{kind="clone",result="succeeded"}')).toBe(1);
    expect(value(lines, 'tenantry_restores_total{kind="clone",result="failed"}')).toBe(1);
    expect(value(lines, 'tenantry_backup_verifications_total{result="passed"}')).toBe(1);
    expect(value(lines, 'tenantry_backup_verifications_total{result="failed"}')).toBe(1);
    expect(value(lines, 'tenantry_backups_stored{tier="premium",verify="failed"}')).toBe(1);
  });
});

describe("pool database connection metrics", () => {
  it("tell each pool database's shared connections apart by its name and server, never by tenant", async () => {
    const pooled = [await mesh.createTenant({ placement: Placement.POOLED }), await mesh.createTenant({ placement: Placement.POOLED })];
    const dedicated = await mesh.createTenant();
    for (const { tenantId } of [...pooled, dedicated]) {
      await mesh.entries.createEntry({ title: "counted" }, { headers: { "x-tenant-id": tenantId } });
    }
    const database = pooled[0]!.database;
    expect(pooled[1]!.database).toBe(database);

    const lines = (await scrape(mesh.backend.httpPort)).filter((l) => l.startsWith("tenantry_db_pool_"));
    // Auth's budget shares this process's meter: its series say service="auth".
    const series = (name: string) => lines.filter((l) => l.startsWith(`${name}{service="backend",`) && l.includes(`pool_database="${database}"`));
    const values = (name: string) => series(name).map((l) => Number(l.split(" ").at(-1)));
    // One series per pool database and server, with the service: the two tenants' connections together.
    expect(series("tenantry_db_pool_connections_open")).toEqual([expect.stringMatching(/\{service="backend",pool_database="[^"]+",server="127\.0\.0\.1:\d+"\} \d+$/)]);
    expect(values("tenantry_db_pool_connections_open")[0]).toBeGreaterThan(0);
    expect(values("tenantry_db_pool_connections_in_use")).toEqual([0]);
    expect(values("tenantry_db_pool_connections_waiting")).toEqual([0]);
    expect(values("tenantry_db_pool_tenants_connected")).toEqual([0]);
    // Neither a tenant nor a dedicated tenant's database is a series of its own.
    expect(lines.filter((l) => [...pooled, dedicated].some(({ tenantId }) => l.includes(tenantId)) || l.includes(dedicated.database))).toEqual([]);
  });
});
