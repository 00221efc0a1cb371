import { metrics, trace, type Meter, type Tracer } from "@opentelemetry/api";
import { PrometheusExporter } from "@opentelemetry/exporter-prometheus";
import { PgInstrumentation } from "@opentelemetry/instrumentation-pg";
import type { ViewOptions } from "@opentelemetry/sdk-metrics";
import { NodeSDK } from "@opentelemetry/sdk-node";
import { NoopSpanProcessor } from "@opentelemetry/sdk-trace";
import type { IncomingMessage, ServerResponse } from "node:http";
import { instrumentationScope, perTenantInstruments } from "./instrument-names.ts";

/** A process's telemetry: tracer, meter and the Prometheus endpoint. */
export interface Telemetry {
  tracer: Tracer;
  meter: Meter;
  /** Spans leave the process (an OTLP endpoint is configured). */
  exporting: boolean;
  /** Answers `GET /metrics` in the Prometheus text format. */
  serveMetrics(req: IncomingMessage, res: ServerResponse): void;
  /** Exports what is pending and stops. */
  shutdown(): Promise<void>;
}

/** Options of {@link startTelemetry}. */
export interface TelemetryOptions {
  /** The service's name, such as "backend": its spans are `tenantry-<service>`'s unless `OTEL_SERVICE_NAME` says otherwise. */
  service: string;
  /** How many tenants get series of their own in the per-tenant call metrics (`TENANTRY_METRICS_TENANT_SERIES`). */
  tenantSeries: number;
}

let started: Telemetry | undefined;

/** A password given as a literal in SQL, such as `password 'x'` or `password E'x\\'y'`. */
const passwordLiteral = /(password\s+)E?'(?:[^'\\]|''|\\.)*'/gi;

/**
 * Starts OpenTelemetry for this process. Its providers are the process's
 * globals, so it starts once; a later call returns what the first started.
 * Every call is traced (so that log lines and mesh calls carry a trace id),
 * but spans leave the process only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
 * `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, over the protocol of
 * `OTEL_EXPORTER_OTLP_PROTOCOL`; every other standard `OTEL_*` variable
 * (service name, resource attributes, headers, sampler, batch sizes) is
 * honoured by the SDK. Metrics are kept for `GET /metrics`.
 * `OTEL_SDK_DISABLED=true` turns all of it off.
 *
 * Spans of SQL queries (`pg`) are made only when spans are exported, and
 * need `pg` to be loaded after this has run: `runMain` starts telemetry
 * before a service's `main` imports anything that imports `pg`.
 */
export function startTelemetry(options: TelemetryOptions, env: NodeJS.ProcessEnv = process.env): Telemetry {
  if (started !== undefined) {
    return started;
  }
  const exporting = Boolean(env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
  const prometheus = new PrometheusExporter({ preventServerStart: true, withoutScopeInfo: true });
  const views: ViewOptions[] = perTenantInstruments.map((instrumentName) => ({
    instrumentName,
    // The limit counts the overflow series too.
    aggregationCardinalityLimit: options.tenantSeries + 1,
  }));
  const sdk = new NodeSDK({
    serviceName: env.OTEL_SERVICE_NAME ? undefined : `tenantry-${options.service}`,
    // Without an exporter spans are still made, for trace ids in logs and in mesh calls, and dropped at their end.
    ...(exporting ? {} : { spanProcessors: [new NoopSpanProcessor()] }),
    metricReaders: [prometheus],
    views,
    // Logs go to stdout through pino, with the trace ids on every line.
    logRecordProcessors: [],
    // SQL spans only when spans leave the process: otherwise each query would pay for a span nobody sees.
    instrumentations: exporting
      ? [
          new PgInstrumentation({
            requireParentSpan: true,
            // Parameters are never recorded; a password can only be in the text (CREATE/ALTER ROLE … PASSWORD '…').
            enhancedDatabaseReporting: false,
            requestHook: (span, { query }) => {
              const text = query.text.replace(passwordLiteral, "$1'[redacted]'");
              if (text !== query.text) {
                span.setAttribute("db.query.text", text);
              }
            },
          }),
        ]
      : [],
  });
  sdk.start();
  const disabled = /^true$/i.test(env.OTEL_SDK_DISABLED ?? "");
  started = {
    tracer: trace.getTracer(instrumentationScope),
    meter: metrics.getMeter(instrumentationScope),
    exporting,
    serveMetrics: (req, res) => {
      if (disabled) {
        res.writeHead(404, { "content-type": "text/plain; charset=utf-8" }).end("metrics are off: OTEL_SDK_DISABLED is set\n");
        return;
      }
      prometheus.getMetricsRequestHandler(req, res);
    },
    shutdown: () => sdk.shutdown(),
  };
  return started;
}
