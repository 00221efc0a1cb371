// Platform started in the caller's process: what main.ts runs, and what the
// in-process test mesh starts (see services/registry.ts).
import type { ServiceStart } from "../registry.ts";
import type { PlatformHooks } from "./platform.ts";

/** Starts Platform from the settings in `env`; its modules load only now, after the process's telemetry has started. */
export const start: ServiceStart<PlatformHooks> = async (env, log, telemetry, hooks) => {
  const { readPlatformConfig } = await import("./config.ts");
  const { startPlatform } = await import("./platform.ts");
  return startPlatform(readPlatformConfig(env), log, telemetry, hooks);
};
