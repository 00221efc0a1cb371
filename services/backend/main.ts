import { createLogger, runMain } from "../mesh/index.ts";
import { startBackend } from "./backend.ts";
import { readBackendConfig } from "./config.ts";

const log = createLogger("backend");
await runMain(log, () => startBackend(readBackendConfig(), log));
