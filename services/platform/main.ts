import { runMain } from "../mesh/run-main.ts";

await runMain("platform", async (log, telemetry) => {
  const { readPlatformConfig } = await import("./config.ts");
  const { startPlatform } = await import("./platform.ts");
  return startPlatform(readPlatformConfig(), log, telemetry);
});
