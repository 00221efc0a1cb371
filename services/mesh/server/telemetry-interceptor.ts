import type { DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError, type Interceptor, type StreamResponse } from "@connectrpc/connect";
import { context, propagation, ROOT_CONTEXT, SpanStatusCode, trace, type Attributes, type Context, type TextMapGetter } from "@opentelemetry/api";
import { tenantCallDuration, tenantCallErrors } from "../telemetry/instrument-names.ts";
import { kLogTenant, type Logger } from "../telemetry/logger.ts";
import type { Telemetry } from "../telemetry/telemetry.ts";
import { kTenant } from "../tenancy/tenant-context.ts";
import { Placement, type TenantRoute } from "../tenancy/tenant-directory.ts";
import { isTenantId, tenantIdHeader } from "../wire/tenant-id.ts";

/** Histogram buckets for call latencies, in seconds. */
const latencyBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** Coarser buckets for per-tenant latencies, whose series multiply by the number of tenants. */
const tenantLatencyBuckets = [0.005, 0.025, 0.1, 0.5, 2.5];

/** Reads trace context from Fetch API headers. */
export const headerGetter: TextMapGetter<Headers> = {
  keys: (headers) => [...headers.keys()],
  get: (headers, key) => headers.get(key) ?? undefined,
};

/** A status code's canonical gRPC name, such as NOT_FOUND; OK for none. */
export function codeName(code: Code | undefined): string {
  return code === undefined ? "OK" : Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/** Codes that say the server failed, as opposed to the caller (OpenTelemetry's rule for server spans). */
const serverFaults = new Set([Code.Unknown, Code.DeadlineExceeded, Code.Unimplemented, Code.Internal, Code.Unavailable, Code.DataLoss]);

/** The RPC system of a request by its content type: the gRPC listener's requests carry none. */
function rpcSystem(header: Headers): string {
  const type = header.get("content-type");
  return type === null || type.startsWith("application/grpc") ? "grpc" : "connect_rpc";
}

/** What the calls of one method over one RPC system share: the span's name and attributes, the metrics' attributes by code. */
interface MethodTelemetry {
  spanName: string;
  attributes: Attributes;
  byCode: Map<string, Attributes>;
}

/** {@link MethodTelemetry} by method and RPC system, made once rather than on every call. */
const methods = new WeakMap<DescMethod, Map<string, MethodTelemetry>>();

function methodTelemetry(method: DescMethod, system: string): MethodTelemetry {
  let bySystem = methods.get(method);
  if (bySystem === undefined) {
    bySystem = new Map();
    methods.set(method, bySystem);
  }
  let shared = bySystem.get(system);
  if (shared === undefined) {
    shared = {
      spanName: `${method.parent.typeName}/${method.name}`,
      attributes: { "rpc.system": system, "rpc.service": method.parent.typeName, "rpc.method": method.name },
      byCode: new Map(),
    };
    bySystem.set(system, shared);
  }
  return shared;
}

function metricAttributes(shared: MethodTelemetry, code: string): Attributes {
  let attributes = shared.byCode.get(code);
  if (attributes === undefined) {
    attributes = { ...shared.attributes, "rpc.grpc.status_code": code };
    shared.byCode.set(code, attributes);
  }
  return attributes;
}

/** The per-tenant metrics' attributes of a resolved tenant, kept with its cached route. */
const tenantAttributes = new WeakMap<TenantRoute, Attributes>();

function tenantAttributesOf(route: TenantRoute): Attributes {
  let attributes = tenantAttributes.get(route);
  if (attributes === undefined) {
    attributes = { tenant: route.tenantId };
    tenantAttributes.set(route, attributes);
  }
  return attributes;
}

/**
 * A resolved tenant's placement as its calls' spans say it (`tenant.placement`):
 * `pooled`, or `dedicated` (as is a route that names none, from a Platform
 * that predates placements).
 */
function placementAttribute(route: TenantRoute): string {
  return route.placement === Placement.POOLED ? "pooled" : "dedicated";
}

/**
 * The outermost interceptor of every service: a server span per call (joined
 * to the caller's trace from `traceparent`) with its tenant's id and, once
 * the tenant is resolved, its placement; the call's latency by service,
 * method and code, and per tenant; the span and tenant id are the active
 * context while the call runs, so that log lines and mesh calls carry them.
 * A streaming call is measured until its stream ends, and each step of the
 * stream runs in the call's context.
 */
export function telemetryInterceptor(telemetry: Telemetry, log: Logger): Interceptor {
  const { meter } = telemetry;
  const duration = meter.createHistogram("rpc.server.call.duration", {
    description: "Duration of calls served, by service, method and status code.",
    unit: "s",
    advice: { explicitBucketBoundaries: latencyBuckets },
  });
  const tenantDuration = meter.createHistogram(tenantCallDuration, {
    description: "Duration of calls served per tenant (known tenants only); its count is the tenant's calls.",
    unit: "s",
    advice: { explicitBucketBoundaries: tenantLatencyBuckets },
  });
  const tenantErrors = meter.createCounter(tenantCallErrors, {
    description: "Calls served per tenant (known tenants only) that ended with an error code.",
  });

  return (next) => async (req) => {
    const started = performance.now();
    const parent = propagation.extract(ROOT_CONTEXT, req.header, headerGetter);
    const shared = methodTelemetry(req.method, rpcSystem(req.header));
    const span = telemetry.startServerSpan(shared.spanName, shared.attributes, parent);
    let callContext = trace.setSpan(parent, span);
    const tenantHeader = req.header.get(tenantIdHeader);
    if (tenantHeader !== null && isTenantId(tenantHeader)) {
      span.setAttribute("tenant.id", tenantHeader);
      callContext = callContext.setValue(kLogTenant, tenantHeader);
    }

    const finish = (error?: unknown) => {
      const code = error === undefined ? undefined : ConnectError.from(error).code;
      const name = codeName(code);
      const seconds = (performance.now() - started) / 1000;
      duration.record(seconds, metricAttributes(shared, name));
      // Only a tenant the call resolved gets series: made-up ids cannot take the bounded slots.
      const tenant = req.contextValues.get(kTenant);
      if (tenant !== undefined) {
        span.setAttribute("tenant.placement", placementAttribute(tenant));
        const attributes = tenantAttributesOf(tenant);
        tenantDuration.record(seconds, attributes);
        if (code !== undefined) {
          tenantErrors.add(1, attributes);
        }
      }
      span.setAttribute("rpc.grpc.status_code", code ?? 0);
      if (code !== undefined && serverFaults.has(code)) {
        span.setStatus({ code: SpanStatusCode.ERROR, message: ConnectError.from(error).rawMessage });
      }
      if (log.isLevelEnabled("debug")) {
        context.with(callContext, () => log.debug({ procedure: shared.spanName, code: name, ms: Math.round(seconds * 1e4) / 10 }, "call"));
      }
      span.end();
    };

    let res;
    try {
      res = await context.with(callContext, next, undefined, req);
    } catch (error) {
      finish(error);
      throw error;
    }
    if (!res.stream) {
      finish();
      return res;
    }
    return { ...res, message: inContext(res, callContext, finish) };
  };
}

/**
 * The response's messages, each step taken in the call's context. `finish`
 * runs once at the end; a stream its reader abandons ends as CANCELED, and
 * is closed in turn.
 */
async function* inContext(res: StreamResponse, callContext: Context, finish: (error?: unknown) => void) {
  const iterator = res.message[Symbol.asyncIterator]();
  let outcome: { error?: unknown } | undefined;
  try {
    for (;;) {
      const step = await context.with(callContext, () => iterator.next());
      if (step.done) {
        outcome = {};
        return;
      }
      yield step.value;
    }
  } catch (error) {
    outcome = { error };
    throw error;
  } finally {
    if (outcome === undefined) {
      outcome = { error: new ConnectError("the reader stopped reading", Code.Canceled) };
      await context.with(callContext, () => iterator.return?.());
    }
    finish(outcome.error);
  }
}
