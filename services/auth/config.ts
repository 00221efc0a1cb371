import { z } from "zod";
import { port, readConfig, tenantServiceEnv, type TenantServiceConfig } from "../mesh/index.ts";
import { registeredService } from "../registry.ts";

const auth = registeredService("auth");

/** Auth's settings, by environment variable. */
export const authEnv = {
  ...tenantServiceEnv,
  /** gRPC listener port. */
  TENANTRY_GRPC_PORT: port.default(auth.grpcPort),
  /** HTTP listener port (Connect, gRPC-Web, gRPC; health checks). */
  TENANTRY_HTTP_PORT: port.default(auth.httpPort),
  /**
   * The key that encrypts the tenants' private signing keys (the same as
   * Platform's): 32 bytes, base64 or base64url. Else `<data dir>/master.key`.
   */
  TENANTRY_MASTER_KEY: z
    .string()
    .refine((s) => Buffer.from(s, "base64url").length === 32, "expected 32 bytes, base64 or base64url encoded")
    .optional(),
};

/** Auth's configuration. */
export type AuthConfig = TenantServiceConfig & { TENANTRY_MASTER_KEY?: string | undefined };

/** Reads Auth's configuration; throws a ConfigError naming the variable at fault. */
export function readAuthConfig(env: NodeJS.ProcessEnv = process.env): AuthConfig {
  return readConfig(authEnv, env);
}
