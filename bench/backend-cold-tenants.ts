// Backend for the cold-tenants benchmark (npm run bench:cold-tenants): the
// route of a tenant named "cold-<n>" points at its own database "cold_<n>",
// reached as its own role "cold_<n>" (password "cold-<n>"), all on the one
// PostgreSQL server of BENCH_SERVER_URL, as dedicated tenants are; users'
// tokens are verified against a key set made here for each tenant, so that
// Platform and Auth need not hold 2,000 tenants. Never deploy.
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { PlatformRoutes, TenantChange } from "../services/mesh/index.ts";
import { runMain } from "../services/mesh/run-main.ts";

/** The permissions of a tenant's catalog, as Auth would list them. */
const catalog = ["entries.read", "entries.write", "users.read", "users.write", "roles.read", "roles.write"];

await runMain("backend", async (log, telemetry) => {
  const { TenantRouteSchema, TenantStatus } = await import("../gen/tenantry/platform/v1/platform_service_pb.js");
  const { UserTokens } = await import("../services/mesh/index.ts");
  const { startBackend } = await import("../services/backend/backend.ts");
  const { readBackendConfig } = await import("../services/backend/config.ts");
  const server = new URL(process.env.BENCH_SERVER_URL!);
  const publicKey = JSON.parse(process.env.BENCH_PUBLIC_JWK!) as object;
  const routes: PlatformRoutes = {
    async resolve(tenantId) {
      const n = /^cold-(\d+)$/.exec(tenantId)?.[1];
      if (n === undefined) {
        throw new ConnectError(`tenant "${tenantId}" not found`, Code.NotFound);
      }
      return create(TenantRouteSchema, {
        tenantId,
        status: TenantStatus.ACTIVE,
        host: server.hostname,
        port: Number(server.port),
        database: `cold_${n}`,
        user: `cold_${n}`,
        password: `cold-${n}`,
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
    fetchKeySet: async (tenantId) => ({
      jwks: JSON.stringify({ keys: [{ ...publicKey, kid: tenantId, alg: "EdDSA", use: "sig" }] }),
      permissions: catalog,
    }),
  });
  return startBackend(readBackendConfig(), log, telemetry, { tenantRoutes: routes, userTokens });
});
