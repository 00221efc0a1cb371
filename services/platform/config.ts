import { z } from "zod";
import { addressMap, commonEnv, port, readConfig } from "../mesh/index.ts";

/** Platform's settings, by environment variable. */
export const platformEnv = {
  ...commonEnv,
  /** gRPC listener port. */
  TENANTRY_GRPC_PORT: port.default(50051),
  /** HTTP listener port (Connect, gRPC-Web, gRPC; health checks). */
  TENANTRY_HTTP_PORT: port.default(8081),
  /**
   * Superuser URL of the platform database, e.g.
   * postgres://postgres:secret@db.example.com:5432/tenantry_platform. Tenant
   * databases are created on the same server.
   */
  TENANTRY_DATABASE_URL: z.url({ protocol: /^postgres(ql)?$/, error: "expected a postgres:// URL" }),
  /** The services that own a schema in every tenant database, as name=host:port (their gRPC ports). */
  TENANTRY_SCHEMA_SERVICES: addressMap.default(new Map([
    ["auth", "127.0.0.1:50052"],
    ["backend", "127.0.0.1:50053"],
  ])),
};

export type PlatformConfig = z.infer<z.ZodObject<typeof platformEnv>>;

/** Reads Platform's configuration; throws a ConfigError naming the variable at fault. */
export function readPlatformConfig(env: NodeJS.ProcessEnv = process.env): PlatformConfig {
  return readConfig(platformEnv, env);
}
