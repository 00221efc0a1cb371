import { port, readConfig, tenantServiceEnv, type TenantServiceConfig } from "../mesh/index.ts";

/** Auth's settings, by environment variable. */
export const authEnv = {
  ...tenantServiceEnv,
  /** gRPC listener port. */
  TENANTRY_GRPC_PORT: port.default(50052),
  /** HTTP listener port (Connect, gRPC-Web, gRPC; health checks). */
  TENANTRY_HTTP_PORT: port.default(8082),
};

/** Reads Auth's configuration; throws a ConfigError naming the variable at fault. */
export function readAuthConfig(env: NodeJS.ProcessEnv = process.env): TenantServiceConfig {
  return readConfig(authEnv, env);
}
