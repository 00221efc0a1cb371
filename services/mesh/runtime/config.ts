import { existsSync } from "node:fs";
import path from "node:path";
import { z } from "zod";

/** A TCP port number; 0 asks the system for a free one. */
export const port = z.coerce.number().int().min(0).max(65535);

/** A positive integer read from a string. */
export const positiveInt = z.coerce.number().int().positive();

/** A comma-separated list, trimmed, empty items dropped. */
export const commaList = z
  .string()
  .transform((s) => s.split(",").map((item) => item.trim()).filter((item) => item !== ""));

/** `name=host:port,name=host:port`, as a map from name to address. */
export const addressMap = z.string().transform((s, ctx) => {
  const map = new Map<string, string>();
  for (const item of s.split(",").map((i) => i.trim()).filter((i) => i !== "")) {
    const m = /^([a-z][a-z0-9-]*)=([^\s=]+:\d+)$/.exec(item);
    if (m === null) {
      ctx.addIssue({ code: "custom", message: `expected name=host:port, got "${item}"` });
      return z.NEVER;
    }
    map.set(m[1]!, m[2]!);
  }
  return map;
});

/** The settings of logs and metrics, besides the standard `OTEL_*` variables of tracing. */
export const telemetryEnv = {
  /** Log level: trace, debug, info, warn, error, fatal or silent. */
  TENANTRY_LOG_LEVEL: z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]).default("info"),
  /**
   * How many tenants get series of their own in a process's per-tenant call
   * metrics; calls of further tenants are counted together, in the series
   * labelled `otel_metric_overflow="true"`.
   */
  TENANTRY_METRICS_TENANT_SERIES: positiveInt.default(200),
};

/**
 * The secrets a service generates into its data directory when they are not
 * set, for local use, by variable and file name. With TENANTRY_ENV=production
 * nothing is generated: each must be set, or its file already be there.
 */
export const generatedSecrets: Readonly<Record<string, string>> = {
  TENANTRY_MESH_KEY: "mesh.key",
  TENANTRY_OPERATOR_TOKEN: "operator.token",
  TENANTRY_MASTER_KEY: "master.key",
};

/** The settings every Tenantry service reads, by environment variable. */
export const commonEnv = {
  ...telemetryEnv,
  /**
   * `production` refuses to start without the secrets of `generatedSecrets`
   * instead of generating them (replicas must share them; a generated key
   * would differ per replica and be lost with its pod).
   */
  TENANTRY_ENV: z.enum(["development", "production"]).default("development"),
  /** Address the listeners bind to. */
  TENANTRY_BIND_HOST: z.string().min(1).default("127.0.0.1"),
  /** Browser origins allowed to call the HTTP port (CORS), comma-separated. */
  TENANTRY_CORS_ORIGINS: commaList.default([]),
  /** How long in-flight calls may run after SIGTERM before they are cut. */
  TENANTRY_SHUTDOWN_GRACE_MS: positiveInt.default(10_000),
  /** Where generated keys and tokens are kept, and (Platform) backups. */
  TENANTRY_DATA_DIR: z.string().min(1).default(".tenantry"),
  /** The secret the services share to sign service tokens; else generated into `<data dir>/mesh.key`. */
  TENANTRY_MESH_KEY: z.string().min(32, "must have at least 32 characters").optional(),
  /** The token operators present to OPERATOR methods; else generated into `<data dir>/operator.token`. */
  TENANTRY_OPERATOR_TOKEN: z.string().min(32, "must have at least 32 characters").optional(),
};

/**
 * Reads and validates a service's configuration from the environment. The
 * shape's keys are the variable names, so an error names the variable and
 * what is wrong with its value.
 */
export function readConfig<S extends z.ZodRawShape>(
  shape: S,
  env: NodeJS.ProcessEnv = process.env,
): z.infer<z.ZodObject<S>> {
  const defined = Object.fromEntries(
    Object.keys(shape).flatMap((key) => (env[key] === undefined || env[key] === "" ? [] : [[key, env[key]]])),
  );
  const result = z.object(shape).safeParse(defined);
  if (!result.success) {
    const lines = result.error.issues.map((issue) => {
      const name = String(issue.path[0] ?? "environment");
      const value = defined[name];
      return `${name}: ${issue.message}${value === undefined ? " (not set)" : ` (got ${shownValue(name, value)})`}`;
    });
    throw new ConfigError(lines.join("\n"));
  }
  const data = result.data as Record<string, unknown>;
  if (data.TENANTRY_ENV === "production") {
    const dataDir = typeof data.TENANTRY_DATA_DIR === "string" ? data.TENANTRY_DATA_DIR : ".tenantry";
    const missing = Object.entries(generatedSecrets).filter(
      ([name, file]) => name in shape && data[name] === undefined && !existsSync(path.resolve(dataDir, file)),
    );
    if (missing.length > 0) {
      throw new ConfigError(
        missing
          .map(([name, file]) => `${name}: required with TENANTRY_ENV=production, where nothing is generated (not set, and no ${path.join(dataDir, file)})`)
          .join("\n"),
      );
    }
  }
  return result.data;
}

/**
 * A value as a configuration error shows it: a secret's (a variable named
 * …_KEY, …_TOKEN or …_PASSWORD) not at all, a URL's password masked.
 */
function shownValue(name: string, value: string): string {
  if (/_(KEY|TOKEN|PASSWORD)$/.test(name)) {
    return `a value of ${value.length} characters, not shown`;
  }
  return `"${value.replace(/^([a-z][a-z0-9+.-]*:\/\/[^/@:]*):[^/@]*@/i, "$1:***@")}"`;
}

/** A configuration value is missing or invalid; the message names the variable. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/** The settings of a service that serves tenants' data (Auth, Backend). */
export const tenantServiceEnv = {
  ...commonEnv,
  /** gRPC address (`host:port`) of Platform, which resolves tenants. */
  TENANTRY_PLATFORM_ADDRESS: z.string().regex(/^[^\s:]+:\d+$/, "expected host:port").default("127.0.0.1:50051"),
  /** gRPC address (`host:port`) of Auth, which publishes each tenant's token signing keys. */
  TENANTRY_AUTH_ADDRESS: z.string().regex(/^[^\s:]+:\d+$/, "expected host:port").default("127.0.0.1:50052"),
  /** The `iss` of users' access tokens: what Auth signs and every service checks. */
  TENANTRY_TOKEN_ISSUER: z.string().min(1).default("tenantry"),
  /** How long a call to Platform (resolving a tenant) may take, waiting for Platform to be reachable included. */
  TENANTRY_PLATFORM_TIMEOUT_MS: positiveInt.default(5000),
  /** Most database connections the process opens, all tenants together. */
  TENANTRY_DB_MAX_CONNECTIONS: positiveInt.default(40),
  /** Most database connections one tenant may hold in this process. */
  TENANTRY_DB_MAX_CONNECTIONS_PER_TENANT: positiveInt.default(5),
  /** Most database connections the pooled tenants of one pool database hold together in this process. */
  TENANTRY_DB_MAX_CONNECTIONS_PER_POOL: positiveInt.default(8),
  /**
   * Most pooled leases in use at once on one database server, over all its
   * pool databases, in this process: calls beyond it wait for one to come back.
   */
  TENANTRY_DB_MAX_POOLED_LEASES_PER_SERVER: positiveInt.default(16),
  /** How long a call waits for a database connection before failing with UNAVAILABLE. */
  TENANTRY_DB_ACQUIRE_TIMEOUT_MS: positiveInt.default(5000),
  /** An idle database connection is closed after this long. */
  TENANTRY_DB_IDLE_TIMEOUT_MS: positiveInt.default(10_000),
  /** How long a tenant's measured database size is trusted before a write measures it again (in the background). */
  TENANTRY_STORAGE_CHECK_INTERVAL_MS: positiveInt.default(60_000),
  /** How many tenants' routes the process keeps. */
  TENANTRY_TENANT_CACHE_SIZE: positiveInt.default(10_000),
  /** How long a tenant's route is trusted while Platform's change feed is not connected. */
  TENANTRY_TENANT_CACHE_TTL_MS: positiveInt.default(30_000),
  /** How long a tenant's route is trusted while the change feed is connected. */
  TENANTRY_TENANT_WATCHED_TTL_MS: positiveInt.default(600_000),
  /** While Platform is unreachable, ACTIVE tenants' cached routes are served up to this age. */
  TENANTRY_TENANT_MAX_STALENESS_MS: positiveInt.default(300_000),
  /** How long a write call of a tenant whose writes are frozen (a move's cutover) is held before it fails with UNAVAILABLE. */
  TENANTRY_FREEZE_MAX_MS: positiveInt.default(5000),
};
