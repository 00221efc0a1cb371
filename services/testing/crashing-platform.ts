// Platform as a process of its own that kills itself (SIGKILL, as `kill -9`)
// right after the provisioning step named by TENANTRY_TEST_CRASH_AFTER is
// done and before it is recorded. For the provisioning crash tests.
import { runMain } from "../mesh/run-main.ts";

const crashAfter = process.env.TENANTRY_TEST_CRASH_AFTER;
await runMain("platform", async (log, telemetry) => {
  const { readPlatformConfig } = await import("../platform/config.ts");
  const { startPlatform } = await import("../platform/platform.ts");
  return startPlatform(readPlatformConfig(), log, telemetry, {
    afterStep: (_tenantId, step) => {
      if (step === crashAfter) {
        process.kill(process.pid, "SIGKILL");
      }
    },
  });
});
