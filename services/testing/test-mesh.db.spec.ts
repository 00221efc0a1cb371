import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FleetService } from "../../gen/tenantry/platform/v1/fleet_service_pb.js";
import { Placement } from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import { operatorCredentialInterceptor } from "../mesh/index.ts";
import { startTestMesh, type TestMesh } from "./test-mesh.ts";

describe("a test mesh of some of the registered services", () => {
  let mesh: TestMesh;
  beforeAll(async () => {
    mesh = await startTestMesh({ services: ["auth"] });
  });
  afterAll(() => mesh?.stop());

  it("runs Platform and those asked for, and has Platform migrate only their schemas", async () => {
    expect(mesh.platformProcessEnv.TENANTRY_SCHEMA_SERVICES).toBe(`auth=127.0.0.1:${mesh.auth.grpcPort}`);
    const tenant = await mesh.createTenant();
    const schemas = await mesh.sql(tenant.database, "select nspname from pg_namespace where nspname in ('auth', 'backend')");
    expect(schemas).toEqual([{ nspname: "auth" }]);
    expect(() => mesh.backend).toThrow("backend is not in this mesh (it runs platform, auth)");
  });

  it("makes a tenant with its owner, who logs in through Auth", async () => {
    const owner = { email: "owner@example.com", password: "correct horse battery" };
    const tenant = await mesh.createTenant({ owner });
    const token = await mesh.login(tenant.tenantId, owner);
    expect(JSON.parse(Buffer.from(token.split(".")[1]!, "base64url").toString())).toMatchObject({ tid: tenant.tenantId });
  });

  it("refuses a service that is not registered, naming those that are", async () => {
    await expect(startTestMesh({ services: ["no-such-service"] })).rejects.toThrow(/no service "no-such-service" in services\/registry.ts/);
  });
});

describe("a test mesh that adds a registered service later", () => {
  let mesh: TestMesh;
  beforeAll(async () => {
    mesh = await startTestMesh({ services: ["auth"], addedLater: ["backend"] });
  });
  afterAll(() => mesh?.stop());

  const backendSchema = (database: string) => mesh.sql(database, "select nspname from pg_namespace where nspname = 'backend'");

  it("has Platform migrate its schema on tenants made after it is added, and on those made before by MigrateTenants", async () => {
    const before = await mesh.createTenant();
    expect(await backendSchema(before.database)).toEqual([]);
    // A pooled tenant's role may not create schemas: Platform makes the new service's before it migrates.
    const pooled = await mesh.createTenant({ placement: Placement.POOLED });
    const pooledBackend = `t_${pooled.tenantId.replaceAll("-", "_")}_backend`;
    const pooledSchema = () => mesh.sql(pooled.database, "select pg_get_userbyid(nspowner) as owner from pg_namespace where nspname = $1", [pooledBackend]);
    expect(await pooledSchema()).toEqual([]);
    expect(() => mesh.backend).toThrow("backend is stopped");

    await mesh.addService("backend");
    expect(mesh.platformProcessEnv.TENANTRY_SCHEMA_SERVICES).toBe(`auth=127.0.0.1:${mesh.auth.grpcPort},backend=127.0.0.1:${mesh.backend.grpcPort}`);
    const after = await mesh.createTenant();
    expect(await backendSchema(after.database)).toEqual([{ nspname: "backend" }]);

    const fleet = mesh.client("platform", FleetService, [operatorCredentialInterceptor(mesh.operatorToken)]);
    const { services } = await fleet.getFleetStatus({});
    expect(services.find((s) => s.service === "backend")).toMatchObject({ current: 1, behind: 2 });
    const migrated: string[] = [];
    for await (const event of fleet.migrateTenants({ onlyBehind: true })) {
      migrated.push(`${event.tenantId} ${event.service}`);
    }
    expect(migrated).toContain(`${before.tenantId} backend`);
    expect(await backendSchema(before.database)).toEqual([{ nspname: "backend" }]);
    expect(migrated).toContain(`${pooled.tenantId} backend`);
    expect(await pooledSchema()).toEqual([{ owner: `tenant_${pooled.tenantId.replaceAll("-", "_")}` }]);
    const { entry } = await mesh.entries.createEntry({ title: "pooled, served" }, { headers: { "x-tenant-id": pooled.tenantId } });
    expect(entry?.title).toBe("pooled, served");
    await expect(mesh.addService("backend")).rejects.toThrow("backend is added already");
  });
});
