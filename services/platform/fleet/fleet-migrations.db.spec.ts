import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FleetService, MigrationOutcome, type MigrateTenantsResponse } from "../../../gen/tenantry/platform/v1/fleet_service_pb.js";
import type { Tenant } from "../../../gen/tenantry/platform/v1/platform_service_pb.js";
import { migrations as backendMigrations } from "../../backend/migrations/index.ts";
import { createGrpcJsTransport, operatorCredentialInterceptor, type GrpcJsTransport } from "../../mesh/index.ts";
import { newerBackendMigrations, releasedBackendVersion, upcomingBackendVersion } from "../../testing/newer-backend.ts";
import { startTestMesh, type TestMesh } from "../../testing/test-mesh.ts";

const released = releasedBackendVersion;
const upcoming = upcomingBackendVersion;
const newer = newerBackendMigrations;

let mesh: TestMesh;
let transport: GrpcJsTransport;
let fleet: ReturnType<typeof createClient<typeof FleetService>>;
let tenants: Tenant[];
beforeAll(async () => {
  // Auth and Backend alone, whatever else is registered: the counts below are of their two schemas.
  mesh = await startTestMesh({ services: ["auth", "backend"] });
  transport = createGrpcJsTransport({ address: `127.0.0.1:${mesh.platform.grpcPort}`, interceptors: [operatorCredentialInterceptor(mesh.operatorToken)] });
  fleet = createClient(FleetService, transport);
  tenants = [];
  for (let i = 0; i < 5; i++) {
    tenants.push(await mesh.createTenant());
  }
});
afterAll(async () => {
  transport?.close();
  await mesh?.stop();
});

async function run(request: Parameters<typeof fleet.migrateTenants>[0]): Promise<MigrateTenantsResponse[]> {
  const events: MigrateTenantsResponse[] = [];
  for await (const event of fleet.migrateTenants(request)) {
    events.push(event);
  }
  return events;
}

const summary = (events: MigrateTenantsResponse[]) =>
  events.map((e) => `${e.tenantId} ${e.service} ${MigrationOutcome[e.outcome]}`).sort();

describe("fleet migrations", () => {
  it("rolls a new migration out to every tenant, past a failing one, and reports the fleet from the ledger", async () => {
    const [a, , c] = tenants as [Tenant, Tenant, Tenant];
    let status = await fleet.getFleetStatus({});
    expect(status.services.find((s) => s.service === "backend")).toMatchObject({ latestVersion: released, current: 5, behind: 0, failed: 0 });

    await mesh.restartBackend(newer);
    // The newer Backend serves tenants still one version behind.
    const { entry } = await mesh.entries.createEntry({ title: "during the rollout" }, { headers: { "x-tenant-id": a.tenantId } });
    expect(entry?.title).toBe("during the rollout");
    status = await fleet.getFleetStatus({});
    expect(status.services.find((s) => s.service === "backend")).toMatchObject({ latestVersion: upcoming, current: 0, behind: 5 });

    // Tenant c's database has something in the way of the new index.
    await mesh.sql(c.database, "create table backend.entries_created_at (x int)");

    const dry = await run({ dryRun: true });
    expect(dry.filter((e) => e.outcome === MigrationOutcome.WOULD_MIGRATE)).toHaveLength(5);
    expect(dry.filter((e) => e.outcome === MigrationOutcome.SKIPPED && e.service === "auth")).toHaveLength(5);
    expect(await mesh.sql(a.database, "select name from backend.mikro_orm_migrations")).toHaveLength(backendMigrations.length);

    const events = await run({ concurrencyPerCluster: 2 });
    expect(summary(events)).toEqual(
      tenants.flatMap((t) => [`${t.tenantId} auth SKIPPED`, `${t.tenantId} backend ${t === c ? "FAILED" : "MIGRATED"}`]).sort(),
    );
    const failed = events.find((e) => e.outcome === MigrationOutcome.FAILED)!;
    expect(failed.error).toMatch(/entries_created_at.*already exists/);
    expect(failed.toVersion).toBe(released);
    expect(events.find((e) => e.tenantId === a.tenantId && e.service === "backend")?.applied).toEqual([upcoming]);
    expect(events.map((e) => e.totals?.done)).toEqual(events.map((_, i) => i + 1));
    expect(events.at(-1)?.totals).toMatchObject({ total: 10, done: 10, migrated: 4, current: 5, failed: 1 });
    expect(await mesh.sql(a.database, "select 1 from pg_indexes where indexname = 'entries_created_at'")).toHaveLength(1);
    expect(await mesh.sql(c.database, "select name from backend.mikro_orm_migrations")).toHaveLength(backendMigrations.length);

    status = await fleet.getFleetStatus({});
    const backend = status.services.find((s) => s.service === "backend")!;
    expect(backend).toMatchObject({ current: 4, behind: 0, failed: 1 });
    expect(backend.failedTenants).toEqual([expect.objectContaining({ tenantId: c.tenantId, version: released, attempts: 2 })]);
    expect(status.services.find((s) => s.service === "auth")).toMatchObject({ current: 5, behind: 0, failed: 0 });
  });

  it("runs again without connecting to the tenants the ledger shows current", async () => {
    const c = tenants[2]!;
    // A fresh Backend: any connection it opens now is one this run made.
    await mesh.restartBackend(newer);
    const again = await run({});
    expect(again.filter((e) => e.outcome !== MigrationOutcome.SKIPPED).map((e) => `${e.tenantId} ${MigrationOutcome[e.outcome]}`)).toEqual([`${c.tenantId} FAILED`]);
    expect(mesh.backend.tenancy.budget.stats().opened).toBe(1);

    await mesh.sql(c.database, "drop table backend.entries_created_at");
    const fixed = await run({ onlyBehind: true });
    expect(summary(fixed)).toEqual([`${c.tenantId} backend MIGRATED`]);
    const status = await fleet.getFleetStatus({});
    expect(status.services.find((s) => s.service === "backend")).toMatchObject({ current: 5, behind: 0, failed: 0, failedTenants: [] });
    expect(await run({ onlyBehind: true })).toEqual([]);
  });

  it("selects tenants by id and refuses malformed filters", async () => {
    const events = await run({ tenantIds: [tenants[0]!.tenantId], dryRun: true });
    expect(new Set(events.map((e) => e.tenantId))).toEqual(new Set([tenants[0]!.tenantId]));
    const error = await run({ tenantIds: ["Not An Id"] }).then(() => undefined, (e: unknown) => ConnectError.from(e));
    expect(error?.code).toBe(Code.InvalidArgument);
    expect(await run({ cluster: "elsewhere" })).toEqual([]);
  });
});
