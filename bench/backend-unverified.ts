// Backend with users' access tokens decoded but not verified: only for
// measuring what verification costs (npm run bench:get-entry). Never deploy.
import { decodeJwt } from "jose";
import type { TokenVerifier } from "../services/mesh/index.ts";
import { runMain } from "../services/mesh/run-main.ts";

const trusting: TokenVerifier = {
  async verify(token, tenantId) {
    const claims = decodeJwt(token);
    return { userId: String(claims.sub), tenantId, permissions: new Set(claims.permissions as string[]) };
  },
};

await runMain("backend", async (log, telemetry) => {
  const { startBackend } = await import("../services/backend/backend.ts");
  const { readBackendConfig } = await import("../services/backend/config.ts");
  return startBackend(readBackendConfig(), log, telemetry, { userTokens: trusting });
});
