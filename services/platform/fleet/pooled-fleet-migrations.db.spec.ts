import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FleetService, MigrationOutcome, type MigrateTenantsResponse } from "../../../gen/tenantry/platform/v1/fleet_service_pb.js";
import { Placement, type Tenant } from "../../../gen/tenantry/platform/v1/platform_service_pb.js";
import { TenantSchemaService, type MigrateManyRequestSchema, type MigrateManyResponse } from "../../../gen/tenantry/schema/v1/tenant_schema_service_pb.js";
import { createGrpcJsTransport, operatorCredentialInterceptor, type GrpcJsTransport } from "../../mesh/index.ts";
import { failure } from "../../testing/failure.ts";
import { newerBackendMigrations, releasedBackendVersion, upcomingBackendVersion } from "../../testing/newer-backend.ts";
import { startTestMesh, type TestMesh } from "../../testing/test-mesh.ts";

let mesh: TestMesh;
let backendTransport: GrpcJsTransport;
let tenants: Tenant[];
beforeAll(async () => {
  // Auth and Backend alone, whatever else is registered: the outcomes below are of their two schemas.
  mesh = await startTestMesh({ services: ["auth", "backend"], platformEnv: { TENANTRY_DATABASE_STOCK: "0" } });
  tenants = [];
  for (let i = 0; i < 4; i++) {
    tenants.push(await mesh.createTenant({ placement: Placement.POOLED }));
  }
  await mesh.restartBackend(newerBackendMigrations);
  backendTransport = createGrpcJsTransport({ address: `127.0.0.1:${mesh.backend.grpcPort}`, interceptors: [mesh.meshCredentials.clientInterceptor()] });
});
afterAll(async () => {
  backendTransport?.close();
  await mesh?.stop();
});

/** A pooled tenant's schema of a service. */
const schemaOf = (tenant: Tenant, service: string) => `t_${tenant.tenantId.replaceAll("-", "_")}_${service}`;

async function migrateMany(request: MessageInitShape<typeof MigrateManyRequestSchema>): Promise<MigrateManyResponse[]> {
  const answers: MigrateManyResponse[] = [];
  for await (const answer of createClient(TenantSchemaService, backendTransport).migrateMany(request)) {
    answers.push(answer);
  }
  return answers;
}

/** How many calls of a method a service (Backend by default) has answered, from its metrics. */
async function callsOf(method: string, service: "backend" | "platform" = "backend"): Promise<number> {
  const lines = (await (await fetch(`http://127.0.0.1:${mesh[service].httpPort}/metrics`)).text()).split("\n");
  return lines
    .filter((l) => l.startsWith("rpc_server_call_duration_count{") && l.includes(`rpc_method="${method}"`))
    .reduce((n, l) => n + Number(l.split(" ").at(-1)), 0);
}

describe("fleet migrations of pooled tenants", () => {
  it("MigrateMany migrates tenants one after another, each answered as Migrate would have answered, past those that fail", async () => {
    const [a, b, c] = tenants as [Tenant, Tenant, Tenant];
    // Tenant b's schema has something in the way of the new index.
    await mesh.sql(b.database, `create table ${schemaOf(b, "backend")}.entries_created_at (x int)`);
    const [resolved, resolvedMany] = [await callsOf("ResolveTenant", "platform"), await callsOf("ResolveTenants", "platform")];
    const answers = await migrateMany({ tenantIds: [a.tenantId, "no-such-tenant", b.tenantId, c.tenantId] });
    // Backend (restarted, knowing no route) asked Platform for the routes together; for the unknown tenant again, alone, to be told NOT_FOUND.
    expect(await callsOf("ResolveTenants", "platform")).toBe(resolvedMany + 1);
    expect(await callsOf("ResolveTenant", "platform")).toBe(resolved + 1);
    expect(answers.map((answer) => [answer.tenantId, answer.result.case])).toEqual([
      [a.tenantId, "migrated"],
      ["no-such-tenant", "error"],
      [b.tenantId, "error"],
      [c.tenantId, "migrated"],
    ]);
    expect(answers[0]!.result.value).toMatchObject({ service: "backend", applied: [upcomingBackendVersion], version: upcomingBackendVersion });
    expect(answers[1]!.result.value).toMatchObject({ code: Code.NotFound });
    expect(answers[2]!.result.value).toMatchObject({ code: Code.Internal, message: expect.stringMatching(/rolled back.*entries_created_at.*already exists/) });
    for (const tenant of [a, c]) {
      expect(await mesh.sql(tenant.database, "select 1 from pg_indexes where schemaname = $1 and indexname = 'entries_created_at'", [schemaOf(tenant, "backend")])).toHaveLength(1);
    }
    // Rolled back: b is where it was.
    expect((await mesh.sql<{ name: string }>(b.database, `select name from ${schemaOf(b, "backend")}.mikro_orm_migrations order by id`)).at(-1)?.name).toBe(releasedBackendVersion);

    // Safe to repeat: nothing more to do for a.
    const [again] = await migrateMany({ tenantIds: [a.tenantId] });
    expect(again!.result).toEqual({ case: "migrated", value: expect.objectContaining({ applied: [], version: upcomingBackendVersion }) });
  });

  it("ResolveTenants answers the routes ResolveTenant answers one by one, leaving out unknown tenants", async () => {
    const { routes } = await mesh.platformMeshClient.resolveTenants({ tenantIds: [...tenants.map((t) => t.tenantId), "no-such-tenant"] });
    const one = await Promise.all(tenants.map(async (t) => (await mesh.platformMeshClient.resolveTenant({ tenantId: t.tenantId })).route));
    const byId = (x: { tenantId: string }, y: { tenantId: string }) => x.tenantId.localeCompare(y.tenantId);
    expect([...routes].sort(byId)).toEqual([...one].sort(byId as never));
    expect(routes.every((route) => route.sessionRole !== "" && route.password !== "")).toBe(true);
    for (const tenantIds of [["Not An Id"], Array.from({ length: 1001 }, (_, i) => `tenant-${i}`)]) {
      expect((await failure(mesh.platformMeshClient.resolveTenants({ tenantIds }))).code).toBe(Code.InvalidArgument);
    }
  });

  it("MigrateMany refuses a request it cannot take whole, with INVALID_ARGUMENT", async () => {
    const [a] = tenants as [Tenant];
    for (const tenantIds of [[], [a.tenantId, "Not An Id"], [a.tenantId, a.tenantId], Array.from({ length: 1001 }, (_, i) => `tenant-${i}`)]) {
      expect((await failure(migrateMany({ tenantIds }))).code).toBe(Code.InvalidArgument);
    }
  });

  it("a fleet migration migrates pooled tenants through MigrateMany, and records each one's outcome", async () => {
    const [a, b, c, d] = tenants as [Tenant, Tenant, Tenant, Tenant];
    const transport = createGrpcJsTransport({ address: `127.0.0.1:${mesh.platform.grpcPort}`, interceptors: [operatorCredentialInterceptor(mesh.operatorToken)] });
    try {
      const fleet = createClient(FleetService, transport);
      const run = async (request: Parameters<typeof fleet.migrateTenants>[0]) => {
        const events: MigrateTenantsResponse[] = [];
        for await (const event of fleet.migrateTenants(request)) {
          events.push(event);
        }
        return events;
      };
      const [migrates, manys] = [await callsOf("Migrate"), await callsOf("MigrateMany")];
      const events = await run({ tenantIds: tenants.map((t) => t.tenantId) });
      const backend = events.filter((e) => e.service === "backend");
      expect(backend.map((e) => `${e.tenantId} ${MigrationOutcome[e.outcome]}`).sort()).toEqual(
        [`${a.tenantId} ALREADY_CURRENT`, `${b.tenantId} FAILED`, `${c.tenantId} ALREADY_CURRENT`, `${d.tenantId} MIGRATED`].sort(),
      );
      expect(backend.find((e) => e.tenantId === b.tenantId)).toMatchObject({ toVersion: releasedBackendVersion, error: expect.stringMatching(/entries_created_at.*already exists/) });
      expect(backend.find((e) => e.tenantId === d.tenantId)?.applied).toEqual([upcomingBackendVersion]);
      expect(events.filter((e) => e.service === "auth").map((e) => MigrationOutcome[e.outcome])).toEqual(["SKIPPED", "SKIPPED", "SKIPPED", "SKIPPED"]);
      expect(events.at(-1)?.totals).toMatchObject({ total: 8, done: 8, migrated: 1, current: 6, failed: 1 });
      expect(await callsOf("Migrate")).toBe(migrates);
      // Through MigrateMany alone (the pool database's tenants spread over its calls, a few at once), never Migrate.
      expect(await callsOf("MigrateMany")).toBeGreaterThan(manys);
      expect(await callsOf("MigrateMany")).toBeLessThanOrEqual(manys + tenants.length);
      const ledger = await mesh.sql(mesh.platformDatabase, "select tenant_id, version, status from platform.tenant_schema_versions where service = 'backend' and tenant_id = any($1) order by tenant_id", [
        tenants.map((t) => t.tenantId),
      ]);
      expect(ledger).toEqual(
        tenants
          .map((t) => ({ tenant_id: t.tenantId, version: t === b ? releasedBackendVersion : upcomingBackendVersion, status: t === b ? "failed" : "succeeded" }))
          .sort((x, y) => x.tenant_id.localeCompare(y.tenant_id)),
      );

      // Once what was in the way is gone, the tenant left behind is migrated, alone.
      await mesh.sql(b.database, `drop table ${schemaOf(b, "backend")}.entries_created_at`);
      const fixed = await run({ onlyBehind: true });
      expect(fixed.map((e) => `${e.tenantId} ${e.service} ${MigrationOutcome[e.outcome]}`)).toEqual([`${b.tenantId} backend MIGRATED`]);
      expect(await run({ onlyBehind: true })).toEqual([]);
    } finally {
      transport.close();
    }
  });
});
