import { runMain } from "../mesh/run-main.ts";

await runMain("auth", async (log, telemetry) => {
  const { readAuthConfig } = await import("./config.ts");
  const { startAuth } = await import("./auth.ts");
  return startAuth(readAuthConfig(), log, telemetry);
});
