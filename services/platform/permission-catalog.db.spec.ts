import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { Migration } from "@mikro-orm/migrations";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthService } from "../../gen/tenantry/auth/v1/auth_service_pb.js";
import { UserService } from "../../gen/tenantry/auth/v1/user_service_pb.js";
import { DefaultRole } from "../../gen/tenantry/options/v1/access_pb.js";
import { FleetService, MigrationOutcome, type MigrateTenantsResponse } from "../../gen/tenantry/platform/v1/fleet_service_pb.js";
import {
  createGrpcJsTransport,
  createLogger,
  operatorCredentialInterceptor,
  port,
  readConfig,
  startTelemetry,
  startTenantService,
  tenantServiceEnv,
  type GrpcJsTransport,
  type TenantService,
} from "../mesh/index.ts";
import { testContract } from "../testing/test-contract.ts";
import { startTestMesh, type TestMesh } from "../testing/test-mesh.ts";

/** A data-owning service registered after tenants exist, declaring permissions no tenant has yet. */
const LedgerService = testContract({
  typeName: "tenantry.ledger.v1.LedgerService",
  permissions: [
    { name: "invoices.read", description: "see invoices", defaultRoles: [DefaultRole.ADMIN, DefaultRole.MEMBER, DefaultRole.VIEWER] },
    { name: "invoices.write", description: "issue invoices", defaultRoles: [DefaultRole.ADMIN] },
  ],
  methods: { ListInvoices: "invoices.read", IssueInvoice: "invoices.write" },
});

class CreateLedgerSchema extends Migration {
  override up(): void {
    this.addSql("create schema if not exists ledger");
  }
}

const password = "correct horse battery";
let mesh: TestMesh;
let ledger: TenantService | undefined;
const transports: GrpcJsTransport[] = [];
const transportTo = (port: number, operator = false) => {
  const transport = createGrpcJsTransport({ address: `127.0.0.1:${port}`, interceptors: operator ? [operatorCredentialInterceptor(mesh.operatorToken)] : [] });
  transports.push(transport);
  return transport;
};

beforeAll(async () => {
  mesh = await startTestMesh();
});
afterAll(async () => {
  transports.forEach((t) => t.close());
  await ledger?.shutdown();
  await mesh?.stop();
});

/** Starts the ledger service in this process, as a service of the mesh, and registers it with Platform. */
async function registerLedger(): Promise<void> {
  const env = {
    ...mesh.sharedEnv,
    TENANTRY_PLATFORM_ADDRESS: `127.0.0.1:${mesh.platform.grpcPort}`,
    TENANTRY_AUTH_ADDRESS: `127.0.0.1:${mesh.auth.grpcPort}`,
  };
  ledger = await startTenantService({
    name: "ledger",
    entities: [],
    migrations: [{ name: "0001-create-ledger-schema", class: CreateLedgerSchema }],
    services: () => [{ service: LedgerService, impl: { listInvoices: () => ({}), issueInvoice: () => ({}) } }],
    config: readConfig({ ...tenantServiceEnv, TENANTRY_GRPC_PORT: port.default(0), TENANTRY_HTTP_PORT: port.default(0) }, env),
    log: createLogger("test", "silent"),
    telemetry: startTelemetry({ service: "test", tenantSeries: 200 }),
  });
  await mesh.restartPlatform({ TENANTRY_SCHEMA_SERVICES: `${mesh.platformProcessEnv.TENANTRY_SCHEMA_SERVICES},ledger=127.0.0.1:${ledger.grpcPort}` });
}

/** A tenant with its owner and one user per other default role; logs them in. */
async function tenantWithUsers() {
  const tenantId = mesh.uniqueTenantId("billed");
  await mesh.platformClient.createTenant({ tenantId, ownerEmail: "owner@example.com", ownerPassword: password });
  const auth = createClient(AuthService, transportTo(mesh.auth.grpcPort));
  const headers = (token: string) => ({ headers: { "x-tenant-id": tenantId, authorization: `Bearer ${token}` } });
  const tokenOf = async (role: string) => (await auth.login({ email: `${role}@example.com`, password }, { headers: { "x-tenant-id": tenantId } })).accessToken;
  const users = createClient(UserService, transportTo(mesh.auth.grpcPort));
  for (const role of ["admin", "member", "viewer"]) {
    await users.createUser({ email: `${role}@example.com`, password, roles: [role] }, headers(await tokenOf("owner")));
  }
  let ledgerClient: Record<string, (req: object, options: object) => Promise<unknown>> | undefined;
  /** Calls a ledger method as the user of `role`, logged in now: "ok", or the error. */
  const call = async (role: string, method: "listInvoices" | "issueInvoice") => {
    ledgerClient ??= createClient(LedgerService, transportTo(ledger!.grpcPort)) as unknown as Record<string, (req: object, options: object) => Promise<unknown>>;
    return ledgerClient[method]!({}, headers(await tokenOf(role))).then(
      () => "ok",
      (e: unknown) => ConnectError.from(e),
    );
  };
  return { tenantId, call };
}

async function migrateTenants(onlyBehind: boolean): Promise<string[]> {
  const fleet = createClient(FleetService, transportTo(mesh.platform.grpcPort, true));
  const events: MigrateTenantsResponse[] = [];
  for await (const event of fleet.migrateTenants({ onlyBehind })) {
    events.push(event);
  }
  return events.map((e) => `${e.tenantId} ${e.service} ${MigrationOutcome[e.outcome]} ${[...e.applied, ...e.addedPermissions].join(",")}`.trim()).sort();
}

async function fleetStatus(service: string) {
  const { services } = await createClient(FleetService, transportTo(mesh.platform.grpcPort, true)).getFleetStatus({});
  return services.find((s) => s.service === service);
}

describe("permissions of a service registered later", () => {
  it("reach an existing tenant with MigrateTenants: until then no role can grant them, then the owner and the roles they name can", async () => {
    const existing = await tenantWithUsers();
    await registerLedger();

    const before = await existing.call("owner", "issueInvoice");
    expect(before).toBeInstanceOf(ConnectError);
    expect((before as ConnectError).code).toBe(Code.FailedPrecondition);
    expect((before as ConnectError).rawMessage).toMatch(/needs permission "invoices.write", which no role of tenant ".*" can grant: the tenant's permission catalog lacks it/);
    expect(await fleetStatus("auth")).toMatchObject({ current: 0, behind: 1 });
    expect(await fleetStatus("backend")).toMatchObject({ current: 1, behind: 0 });

    expect(await migrateTenants(true)).toEqual([
      `${existing.tenantId} auth MIGRATED invoices.read,invoices.write`,
      `${existing.tenantId} ledger MIGRATED 0001-create-ledger-schema`,
    ]);
    expect(await migrateTenants(true)).toEqual([]);
    expect(await fleetStatus("auth")).toMatchObject({ current: 1, behind: 0 });

    expect(await existing.call("owner", "issueInvoice")).toBe("ok");
    expect(await existing.call("admin", "issueInvoice")).toBe("ok");
    expect(await existing.call("member", "listInvoices")).toBe("ok");
    expect(await existing.call("viewer", "listInvoices")).toBe("ok");
  });

  it("are given to a tenant created afterwards from the start", async () => {
    const created = await tenantWithUsers();
    expect(await created.call("owner", "issueInvoice")).toBe("ok");
    expect(await created.call("admin", "issueInvoice")).toBe("ok");
    expect(await created.call("member", "listInvoices")).toBe("ok");
    const denied = await created.call("member", "issueInvoice");
    expect((denied as ConnectError).code).toBe(Code.PermissionDenied);
    expect((denied as ConnectError).rawMessage).toMatch(/needs permission "invoices.write", which the user's roles do not grant/);
    // Its ledger entries are current: nothing to bring up to date.
    expect((await migrateTenants(true)).filter((e) => e.startsWith(created.tenantId))).toEqual([]);
    expect(await fleetStatus("auth")).toMatchObject({ current: 2, behind: 0 });
  });
});
