import { port, readConfig, tenantServiceEnv, type TenantServiceConfig } from "../mesh/index.ts";
import { registeredService } from "../registry.ts";

const backend = registeredService("backend");

/** Backend's settings, by environment variable. */
export const backendEnv = {
  ...tenantServiceEnv,
  /** gRPC listener port. */
  TENANTRY_GRPC_PORT: port.default(backend.grpcPort),
  /** HTTP listener port (Connect, gRPC-Web, gRPC; health checks). */
  TENANTRY_HTTP_PORT: port.default(backend.httpPort),
};

/** Reads Backend's configuration; throws a ConfigError naming the variable at fault. */
export function readBackendConfig(env: NodeJS.ProcessEnv = process.env): TenantServiceConfig {
  return readConfig(backendEnv, env);
}
