import { runMain } from "../mesh/run-main.ts";

await runMain("backend", async (log, telemetry) => {
  const { readBackendConfig } = await import("./config.ts");
  const { startBackend } = await import("./backend.ts");
  return startBackend(readBackendConfig(), log, telemetry);
});
