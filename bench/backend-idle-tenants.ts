// Backend for the memory benchmark (npm run bench:memory): the route of any
// tenant named "idle-<n>" points at one shared database, and users' tokens
// are verified against a key set made here for each tenant, so that
// thousands of tenants can be known without as many databases, or Platform
// and Auth, whose memory is not the one measured. Each route and key set is
// made afresh on each request, as if it came over the wire. On SIGUSR2 it
// collects garbage (node --expose-gc) and prints its memory as one JSON
// line. Never deploy.
import { create } from "@bufbuild/protobuf";
import { getHeapStatistics } from "node:v8";
import { Code, ConnectError } from "@connectrpc/connect";
import type { PlatformRoutes, TenantChange } from "../services/mesh/index.ts";
import { runMain } from "../services/mesh/run-main.ts";

/** The permissions of a tenant's catalog, as Auth would list them. */
const catalog = ["entries.read", "entries.write", "users.read", "users.write", "roles.read", "roles.write"];

process.on("SIGUSR2", () => {
  // All the garbage there is, and the pages it held given back, as V8 does when memory runs out.
  (globalThis as { gc?: (options: object) => void }).gc?.({ type: "major", execution: "sync", flavor: "last-resort" });
  const heap = getHeapStatistics();
  process.stdout.write(`${JSON.stringify({ memory: { ...process.memoryUsage(), mallocedMemory: heap.malloced_memory, heapCommitted: heap.total_physical_size } })}\n`);
});

await runMain("backend", async (log, telemetry) => {
  const { TenantRouteSchema, TenantStatus } = await import("../gen/tenantry/platform/v1/platform_service_pb.js");
  const { UserTokens } = await import("../services/mesh/index.ts");
  const { startBackend } = await import("../services/backend/backend.ts");
  const { readBackendConfig } = await import("../services/backend/config.ts");
  const database = new URL(process.env.BENCH_TENANT_DATABASE_URL!);
  const publicKey = JSON.parse(process.env.BENCH_PUBLIC_JWK!) as object;
  const routes: PlatformRoutes = {
    async resolve(tenantId) {
      if (!/^idle-\d+$/.test(tenantId)) {
        throw new ConnectError(`tenant "${tenantId}" not found`, Code.NotFound);
      }
      return create(TenantRouteSchema, {
        tenantId,
        status: TenantStatus.ACTIVE,
        host: database.hostname,
        port: Number(database.port),
        database: database.pathname.slice(1),
        user: decodeURIComponent(database.username),
        password: decodeURIComponent(database.password),
      });
    },
    async *changes(signal): AsyncIterable<TenantChange> {
      // Connected, and nothing ever changes.
      yield { tenantId: "", status: TenantStatus.UNSPECIFIED, freezes: [] };
      await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
    },
    async acknowledgeFreeze() {},
  };
  const userTokens = new UserTokens({
    issuer: "tenantry",
    // Strings of their own, as decoded from Auth's answer.
    fetchKeySet: async (tenantId) => ({
      jwks: JSON.stringify({ keys: [{ ...publicKey, kid: tenantId, alg: "EdDSA", use: "sig" }] }),
      permissions: catalog.map((name) => Buffer.from(name).toString()),
    }),
  });
  return startBackend(readBackendConfig(), log, telemetry, { tenantRoutes: routes, userTokens });
});
