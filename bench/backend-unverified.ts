// Backend with users' access tokens decoded but not verified: only for
// measuring what verification costs (npm run bench:get-entry). Never deploy.
import { decodeJwt } from "jose";
import { startBackend } from "../services/backend/backend.ts";
import { readBackendConfig } from "../services/backend/config.ts";
import { migrations } from "../services/backend/migrations/index.ts";
import { createLogger, runMain, type TokenVerifier } from "../services/mesh/index.ts";

const trusting: TokenVerifier = {
  async verify(token, tenantId) {
    const claims = decodeJwt(token);
    return { userId: String(claims.sub), tenantId, permissions: new Set(claims.permissions as string[]) };
  },
};
const log = createLogger("backend");
await runMain(log, () => startBackend(readBackendConfig(), log, migrations, trusting));
