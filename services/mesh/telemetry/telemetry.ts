import { isSpanContextValid, metrics, SpanKind, trace, TraceFlags, type Attributes, type Context, type Meter, type Span, type Tracer } from "@opentelemetry/api";
import { PrometheusExporter } from "@opentelemetry/exporter-prometheus";
import { PgInstrumentation } from "@opentelemetry/instrumentation-pg";
import type { ViewOptions } from "@opentelemetry/sdk-metrics";
import { NodeSDK } from "@opentelemetry/sdk-node";
import { NoopSpanProcessor, RandomIdGenerator } from "@opentelemetry/sdk-trace";
import type { IncomingMessage, ServerResponse } from "node:http";
import { instrumentationScope, perTenantInstruments } from "./instrument-names.ts";

/** A process's telemetry: tracer, meter and the Prometheus endpoint. */
export interface Telemetry {
  tracer: Tracer;
  meter: Meter;
  /** Spans leave the process (an OTLP endpoint is configured). */
  exporting: boolean;
  /**
   * Starts the server span of a call, in the caller's trace (`parent`).
   * Spans that leave the process are recorded; otherwise, under the default
   * sampler, the span only carries the ids the SDK would have given it (for
   * log lines and mesh calls), without the SDK's bookkeeping of a span that
   * is dropped at its end anyway.
   */
  startServerSpan(name: string, attributes: Attributes, parent: Context): Span;
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
  const tracer = trace.getTracer(instrumentationScope);
  // Another sampler decides what it decides: only the default one (parent-based, always on) is mirrored.
  const idsOnly = !exporting && !disabled && !env.OTEL_TRACES_SAMPLER;
  started = {
    tracer,
    meter: metrics.getMeter(instrumentationScope),
    exporting,
    startServerSpan: idsOnly
      ? (_name, _attributes, parent) => idsOnlySpan(parent)
      : (name, attributes, parent) => tracer.startSpan(name, { kind: SpanKind.SERVER, attributes }, parent),
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

const ids = new RandomIdGenerator();

/**
 * A span that records nothing and carries the ids the SDK would give a
 * server span under its default sampler: the parent's trace and sampled
 * flag, or a new sampled trace without a parent.
 */
function idsOnlySpan(parent: Context): Span {
  const caller = trace.getSpanContext(parent);
  if (caller !== undefined && isSpanContextValid(caller)) {
    return trace.wrapSpanContext({
      traceId: caller.traceId,
      spanId: ids.generateSpanId(),
      traceFlags: caller.traceFlags & TraceFlags.SAMPLED,
      ...(caller.traceState !== undefined && { traceState: caller.traceState }),
    });
  }
  return trace.wrapSpanContext({ traceId: ids.generateTraceId(), spanId: ids.generateSpanId(), traceFlags: TraceFlags.SAMPLED });
}
