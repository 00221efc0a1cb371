import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { createClient, type Client } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthService } from "../gen/tenantry/auth/v1/auth_service_pb.js";
import { EntryService } from "../gen/tenantry/backend/v1/entry_service_pb.js";
import { PlatformService } from "../gen/tenantry/platform/v1/platform_service_pb.js";
import { WriteFreezeService } from "../gen/tenantry/platform/v1/write_freeze_service_pb.js";
import { createGrpcJsTransport, operatorCredentialInterceptor, type GrpcJsTransport } from "../services/mesh/index.ts";
import { startMeshProcesses, type MeshProcesses } from "../services/testing/mesh-processes.ts";
import { TestServer } from "../services/testing/test-server.ts";

const password = "correct horse battery staple";

describe("a write freeze whose Platform is killed", () => {
  let mesh: MeshProcesses;
  const server = new TestServer();
  const transports: GrpcJsTransport[] = [];
  let entries: Client<typeof EntryService>;
  let freezes: Client<typeof WriteFreezeService>;
  /** A tenant's database and the metadata of its owner's calls. */
  const tenants: { database: string; headers: Record<string, string> }[] = [];

  beforeAll(async () => {
    // A lease of 2 s; a write is held for up to ten minutes, so only the lease's end lets one through.
    mesh = await startMeshProcesses({ env: { TENANTRY_FREEZE_LEASE_MS: "2000", TENANTRY_FREEZE_MAX_MS: "600000" } });
    const transport = (port: number, interceptors = [operatorCredentialInterceptor(mesh.sharedEnv.TENANTRY_OPERATOR_TOKEN!)]) => {
      const t = createGrpcJsTransport({ address: `127.0.0.1:${port}`, interceptors });
      transports.push(t);
      return t;
    };
    const platform = createClient(PlatformService, transport(mesh.platform.grpcPort));
    const auth = createClient(AuthService, transport(mesh.auth.grpcPort, []));
    entries = createClient(EntryService, transport(mesh.backend.grpcPort, []));
    freezes = createClient(WriteFreezeService, transport(mesh.platform.grpcPort));
    for (const name of ["frozen", "other"]) {
      const tenantId = `${name}-${process.pid}`;
      const { tenant } = await platform.createTenant({ tenantId, ownerEmail: `owner@${name}.example`, ownerPassword: password });
      const { accessToken } = await auth.login({ email: `owner@${name}.example`, password }, { headers: { "x-tenant-id": tenantId } });
      tenants.push({ database: tenant!.database, headers: { "x-tenant-id": tenantId, authorization: `Bearer ${accessToken}` } });
    }
  }, 120_000);

  afterAll(async () => {
    transports.forEach((t) => t.close());
    await mesh?.stop();
    await server.close();
  });

  const titles = async (database: string) => (await server.sql<{ title: string }>(database, "select title from backend.entries order by title")).map((r) => r.title);

  it("ends by itself once its lease runs out: the write it held goes through, and reads and other tenants went on", async () => {
    const [frozen, other] = tenants as [(typeof tenants)[0], (typeof tenants)[0]];
    const { entry } = await entries.createEntry({ title: "before" }, { headers: frozen.headers });
    const tenantId = frozen.headers["x-tenant-id"]!;

    const { freeze } = await freezes.freezeTenantWrites({ tenantId, ttl: durationFromMs(600_000) });
    expect(freeze?.acknowledgements.map((a) => a.service).sort()).toEqual(["auth", "backend"]);
    const held = entries.createEntry({ title: "held" }, { headers: frozen.headers });
    expect((await entries.getEntry({ id: entry!.id }, { headers: frozen.headers })).entry?.title).toBe("before");
    await entries.createEntry({ title: "meanwhile" }, { headers: other.headers });
    expect(await titles(other.database)).toEqual(["meanwhile"]);
    expect(await titles(frozen.database)).toEqual(["before"]);

    // Nobody renews the freeze any more, nor thaws it.
    await mesh.kill("platform");
    expect((await held).entry?.title).toBe("held");
    await entries.createEntry({ title: "after" }, { headers: frozen.headers });
    expect(await titles(frozen.database)).toEqual(["after", "before", "held"]);
  });
});
