import { createLogger, runMain } from "../mesh/index.ts";
import { readPlatformConfig } from "./config.ts";
import { startPlatform } from "./platform.ts";

const log = createLogger("platform");
await runMain(log, () => startPlatform(readPlatformConfig(), log));
