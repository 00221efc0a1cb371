// Backend started in the caller's process: what main.ts runs, and what the
// in-process test mesh starts (see services/registry.ts).
import type { TenantService, TenantServiceOverrides } from "../mesh/index.ts";
import type { ServiceStart } from "../registry.ts";

/** Starts Backend from the settings in `env`; its modules load only now, after the process's telemetry has started. */
export const start: ServiceStart<TenantServiceOverrides, TenantService> = async (env, log, telemetry, overrides) => {
  const { readBackendConfig } = await import("./config.ts");
  const { startBackend } = await import("./backend.ts");
  return startBackend(readBackendConfig(env), log, telemetry, overrides);
};
