// Auth started in the caller's process: what main.ts runs, and what the
// in-process test mesh starts (see services/registry.ts).
import type { TenantService, TenantServiceOverrides } from "../mesh/index.ts";
import type { ServiceStart } from "../registry.ts";

/** Starts Auth from the settings in `env`; its modules load only now, after the process's telemetry has started. */
export const start: ServiceStart<Pick<TenantServiceOverrides, "tenantRoutes">, TenantService> = async (env, log, telemetry, overrides) => {
  const { readAuthConfig } = await import("./config.ts");
  const { startAuth } = await import("./auth.ts");
  return startAuth(readAuthConfig(env), log, telemetry, overrides);
};
