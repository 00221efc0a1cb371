// Platform as a process of its own that kills itself (SIGKILL, as `kill -9`)
// right after the provisioning step named by TENANTRY_TEST_CRASH_AFTER is
// done and before it is recorded. For the provisioning crash tests.
import { createLogger, runMain } from "../mesh/index.ts";
import { readPlatformConfig } from "../platform/config.ts";
import { startPlatform } from "../platform/platform.ts";

const crashAfter = process.env.TENANTRY_TEST_CRASH_AFTER;
const log = createLogger("platform");
await runMain(log, () =>
  startPlatform(readPlatformConfig(), log, {
    afterStep: (_tenantId, step) => {
      if (step === crashAfter) {
        process.kill(process.pid, "SIGKILL");
      }
    },
  }),
);
