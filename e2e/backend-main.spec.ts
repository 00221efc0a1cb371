import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EntryService } from "../gen/tenantry/backend/v1/entry_service_pb.js";
import { createGrpcJsTransport } from "../services/mesh/index.ts";
import { freePort } from "../services/testing/free-port.ts";
import { startServiceProcess } from "../services/testing/service-process.ts";
import { startTestMesh, type TestMesh } from "../services/testing/test-mesh.ts";

let mesh: TestMesh;
beforeAll(async () => {
  mesh = await startTestMesh();
});
const spawned: ChildProcess[] = [];
afterAll(async () => {
  // A failed test may leave its process behind: never outlive the run.
  spawned.filter((c) => c.exitCode === null && c.signalCode === null).forEach((c) => c.kill("SIGKILL"));
  await mesh?.stop();
});

async function startBackendProcess(env: Record<string, string>): Promise<{ child: ChildProcess; grpcPort: number; httpPort: number; output: () => string }> {
  const grpcPort = await freePort();
  const httpPort = await freePort();
  const { child, output } = await startServiceProcess(
    path.resolve("services/backend/main.ts"),
    {
      TENANTRY_GRPC_PORT: String(grpcPort),
      TENANTRY_HTTP_PORT: String(httpPort),
      TENANTRY_PLATFORM_ADDRESS: `127.0.0.1:${mesh.platform.grpcPort}`,
      TENANTRY_AUTH_ADDRESS: `127.0.0.1:${mesh.auth.grpcPort}`,
      ...mesh.sharedEnv,
      ...env,
    },
    { httpPort, timeoutMs: 20_000 },
  );
  spawned.push(child);
  return { child, grpcPort, httpPort, output };
}

describe("backend process", () => {
  it("on SIGTERM stops taking calls but lets the calls in flight finish", async () => {
    const tenant = await mesh.createTenant();
    const backend = await startBackendProcess({ TENANTRY_SHUTDOWN_GRACE_MS: "15000" });
    const headers = { "x-tenant-id": tenant.tenantId };
    const transport = createGrpcJsTransport({ address: `127.0.0.1:${backend.grpcPort}`, interceptors: [mesh.accessTokens.interceptor()] });
    const client = createClient(EntryService, transport);
    await client.listEntries({}, { headers });

    // Hold a lock so that the next write stays in flight until we let it go.
    const locker = new pg.Client({ connectionString: mesh.databaseUrl(tenant.database) });
    await locker.connect();
    await locker.query("begin");
    await locker.query("lock table backend.entries in access exclusive mode");
    const inFlight = client.createEntry({ title: "written during shutdown" }, { headers });
    for (;;) {
      const [row] = await mesh.sql<{ n: number }>(
        "postgres",
        "select count(*)::int as n from pg_stat_activity where datname = $1 and application_name = 'tenantry-backend' and wait_event_type = 'Lock'",
        [tenant.database],
      );
      if (row!.n > 0) {
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }

    backend.child.kill("SIGTERM");
    const deadline = Date.now() + 5000;
    while ((await fetch(`http://127.0.0.1:${backend.httpPort}/readyz`).then((r) => r.status, () => 0)) === 200 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const late = createClient(EntryService, createGrpcJsTransport({ address: `127.0.0.1:${backend.grpcPort}`, interceptors: [mesh.accessTokens.interceptor()] }));
    const refused = await late.listEntries({}, { headers, timeoutMs: 2000 }).then(() => undefined, (e: unknown) => ConnectError.from(e));
    expect(refused?.code).toBe(Code.Unavailable);
    expect(backend.child.exitCode).toBeNull();

    await locker.query("rollback");
    await locker.end();
    const { entry } = await inFlight;
    expect(entry?.title).toBe("written during shutdown");
    const [code] = await once(backend.child, "exit");
    expect(code).toBe(0);
    const rows = await mesh.sql(tenant.database, "select title from backend.entries where id = $1", [entry!.id]);
    expect(rows).toEqual([{ title: "written during shutdown" }]);
    transport.close();
  });

  it("refuses to start with a configuration error that names the variable", async () => {
    const child = spawn(process.execPath, [path.resolve("services/backend/main.ts")], {
      env: { PATH: process.env.PATH, TENANTRY_GRPC_PORT: "not-a-port" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stderr = "";
    child.stderr!.on("data", (chunk) => (stderr += chunk));
    const [code] = await once(child, "exit");
    expect(code).toBe(78);
    expect(stderr).toMatch(/TENANTRY_GRPC_PORT/);
    expect(stderr).toMatch(/not-a-port/);
  });

  it("in production, refuses to start without its secrets, naming each, and generates none", async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), "tenantry-production-"));
    try {
      const exits = await Promise.all(
        ["backend", "platform"].map(async (service) => {
          const child = spawn(process.execPath, [path.resolve(`services/${service}/main.ts`)], {
            env: {
              PATH: process.env.PATH,
              TENANTRY_ENV: "production",
              TENANTRY_DATA_DIR: dataDir,
              TENANTRY_DATABASE_URL: mesh.databaseUrl(mesh.platformDatabase),
            },
            stdio: ["ignore", "pipe", "pipe"],
          });
          let stderr = "";
          child.stderr!.on("data", (chunk) => (stderr += chunk));
          const [code] = await once(child, "exit");
          return { service, code, stderr };
        }),
      );
      const named = (stderr: string) => [...stderr.matchAll(/^(TENANTRY_\w+): required with TENANTRY_ENV=production/gm)].map((m) => m[1]);
      expect(exits[0]).toMatchObject({ service: "backend", code: 78 });
      expect(named(exits[0]!.stderr)).toEqual(["TENANTRY_MESH_KEY", "TENANTRY_OPERATOR_TOKEN"]);
      expect(exits[1]).toMatchObject({ service: "platform", code: 78 });
      expect(named(exits[1]!.stderr)).toEqual(["TENANTRY_MESH_KEY", "TENANTRY_OPERATOR_TOKEN", "TENANTRY_MASTER_KEY"]);
      expect(await readdir(dataDir)).toEqual([]);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
