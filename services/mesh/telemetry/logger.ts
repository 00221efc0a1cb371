import { context, createContextKey, isSpanContextValid, trace } from "@opentelemetry/api";
import { pino, type DestinationStream, type Logger, type LoggerOptions } from "pino";

export type { Logger };

/** The key under which a call's tenant id travels in the OpenTelemetry context, for log lines. */
export const kLogTenant = createContextKey("tenantry.tenant.id");

/** Field names that hold secrets, wherever they appear in a logged object (up to three levels deep). */
const secretFields = [
  "password",
  "ownerPassword",
  "adminPassword",
  "authorization",
  "token",
  "accessToken",
  "refreshToken",
  "operatorToken",
  "meshKey",
  "masterKey",
  "privateKey",
  "secret",
  "secretAccessKey",
  "sessionToken",
  "connectionString",
];

/**
 * Creates the JSON logger of a service, at `level` (trace, debug, info,
 * warn, error, fatal or silent: a service's `TENANTRY_LOG_LEVEL`);
 * credentials are redacted wherever they appear under the usual names. A
 * line logged while a call runs carries the call's `trace_id`, `span_id`
 * and `tenant_id`. Lines go to stdout, or to `destination`.
 */
export function createLogger(service: string, level: string, destination?: DestinationStream): Logger {
  const options: LoggerOptions = {
    level,
    base: { service },
    redact: {
      paths: secretFields.flatMap((field) => [field, `*.${field}`, `*.*.${field}`]),
      censor: "[redacted]",
    },
    mixin() {
      const active = context.active();
      const spanContext = trace.getSpanContext(active);
      const tenantId = active.getValue(kLogTenant);
      return {
        ...(spanContext !== undefined && isSpanContextValid(spanContext) ? { trace_id: spanContext.traceId, span_id: spanContext.spanId } : {}),
        ...(tenantId === undefined ? {} : { tenant_id: tenantId }),
      };
    },
  };
  return destination === undefined ? pino(options) : pino(options, destination);
}
