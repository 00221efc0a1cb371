import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
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
