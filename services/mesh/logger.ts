import { pino, type Logger } from "pino";

export type { Logger };

/**
 * Creates the JSON logger of a service. The level comes from
 * `TENANTRY_LOG_LEVEL` (default "info"); credentials are redacted wherever
 * they appear under the usual names.
 */
export function createLogger(service: string, level = process.env.TENANTRY_LOG_LEVEL ?? "info"): Logger {
  return pino({
    level,
    base: { service },
    redact: {
      paths: ["password", "*.password", "authorization", "*.authorization", "*.*.password", "connectionString", "*.connectionString"],
      censor: "[redacted]",
    },
  });
}
