import { createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Placement, PlatformService, TenantStatus, Tier } from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import { createGrpcJsTransport, tenantDatabaseName, type GrpcJsTransport } from "../mesh/index.ts";
import { startTestMesh, type TestMesh } from "../testing/test-mesh.ts";

// Platform with its own defaults (TENANTRY_TIER_PLACEMENTS unset), unlike
// the other specs' meshes, which make every tier dedicated.
let mesh: TestMesh;
let anonymous: GrpcJsTransport | undefined;
beforeAll(async () => {
  mesh = await startTestMesh({ services: ["auth", "backend"], tierPlacements: null });
});
afterAll(async () => {
  anonymous?.close();
  await mesh?.stop();
});

const headers = (tenantId: string) => ({ headers: { "x-tenant-id": tenantId } });

describe("tenants created without a placement, with Platform's default tier placements", () => {
  it("are pooled when STANDARD: schemas in a pool database, served from there", async () => {
    const tenantId = mesh.uniqueTenantId("standard");
    const { tenant } = await mesh.platformClient.createTenant({ tenantId, tier: Tier.STANDARD });
    expect(tenant).toMatchObject({ tier: Tier.STANDARD, status: TenantStatus.ACTIVE, placement: Placement.POOLED, database: `${mesh.platformDatabase}_pool_1` });
    const { route } = await mesh.platformMeshClient.resolveTenant({ tenantId });
    expect(route).toMatchObject({ placement: Placement.POOLED, database: tenant!.database, schemaPrefix: `t_${tenantId.replaceAll("-", "_")}_` });
    const [own] = await mesh.sql("postgres", "select datname from pg_database where datname = $1", [tenantDatabaseName(tenantId)]);
    expect(own).toBeUndefined();
    await mesh.entries.createEntry({ title: "pooled" }, headers(tenantId));
    expect((await mesh.entries.listEntries({}, headers(tenantId))).entries.map((e) => e.title)).toEqual(["pooled"]);
  });

  it("have a database of their own when PREMIUM or ENTERPRISE", async () => {
    for (const tier of [Tier.PREMIUM, Tier.ENTERPRISE]) {
      const tenantId = mesh.uniqueTenantId("paid");
      const { tenant } = await mesh.platformClient.createTenant({ tenantId, tier });
      expect(tenant, Tier[tier]).toMatchObject({ tier, status: TenantStatus.ACTIVE, placement: Placement.DEDICATED, database: tenantDatabaseName(tenantId) });
      const { route } = await mesh.platformMeshClient.resolveTenant({ tenantId });
      expect(route, Tier[tier]).toMatchObject({ placement: Placement.DEDICATED, database: tenantDatabaseName(tenantId), schemaPrefix: "" });
      await mesh.entries.createEntry({ title: "dedicated" }, headers(tenantId));
      expect((await mesh.entries.listEntries({}, headers(tenantId))).entries.map((e) => e.title)).toEqual(["dedicated"]);
    }
  });

  it("are pooled when signed up (SignUp makes STANDARD tenants)", async () => {
    anonymous = createGrpcJsTransport({ address: `127.0.0.1:${mesh.platform.grpcPort}` });
    const tenantId = mesh.uniqueTenantId("signup");
    const { tenant } = await createClient(PlatformService, anonymous).signUp({ tenantId, ownerEmail: "founder@example.com", ownerPassword: "a long password" });
    expect(tenant).toMatchObject({ tier: Tier.STANDARD, status: TenantStatus.ACTIVE, placement: Placement.POOLED });
    expect(await mesh.login(tenantId, { email: "founder@example.com", password: "a long password" })).not.toBe("");
  });
});

describe("tenants created with a placement", () => {
  it("get the one asked for, whatever their tier's", async () => {
    const dedicated = await mesh.createTenant({ placement: Placement.DEDICATED });
    expect(dedicated).toMatchObject({ tier: Tier.STANDARD, placement: Placement.DEDICATED, database: tenantDatabaseName(dedicated.tenantId) });
    const tenantId = mesh.uniqueTenantId("premium");
    const { tenant: pooled } = await mesh.platformClient.createTenant({ tenantId, tier: Tier.PREMIUM, placement: Placement.POOLED });
    expect(pooled).toMatchObject({ tier: Tier.PREMIUM, placement: Placement.POOLED, database: `${mesh.platformDatabase}_pool_1` });
  });
});
