import { createLogger, runMain } from "../mesh/index.ts";
import { startAuth } from "./auth.ts";
import { readAuthConfig } from "./config.ts";

const log = createLogger("auth");
await runMain(log, () => startAuth(readAuthConfig(), log));
