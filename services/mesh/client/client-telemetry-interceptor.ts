import { ConnectError, type Interceptor } from "@connectrpc/connect";
import { context, propagation, SpanKind, SpanStatusCode, trace, type TextMapSetter } from "@opentelemetry/api";
import { instrumentationScope } from "../telemetry/instrument-names.ts";
import { guardStream } from "../wire/stream-response.ts";

/** Writes trace context into Fetch API headers. */
export const headerSetter: TextMapSetter<Headers> = {
  set: (headers, key, value) => headers.set(key, value),
};

/**
 * A mesh client's interceptor: a client span per call, child of the active
 * context (the call being served, if any), whose trace context travels in
 * `traceparent` so that the callee's span joins the same trace.
 */
export function clientTelemetryInterceptor(): Interceptor {
  // The global tracer: a process that has not started telemetry (a CLI) traces nothing.
  const tracer = trace.getTracer(instrumentationScope);
  return (next) => async (req) => {
    const attributes = { "rpc.system": "grpc", "rpc.service": req.service.typeName, "rpc.method": req.method.name };
    const span = tracer.startSpan(`${req.service.typeName}/${req.method.name}`, { kind: SpanKind.CLIENT, attributes });
    propagation.inject(trace.setSpan(context.active(), span), req.header, headerSetter);
    const finish = (error?: unknown) => {
      const code = error === undefined ? undefined : ConnectError.from(error).code;
      span.setAttribute("rpc.grpc.status_code", code ?? 0);
      if (code !== undefined) {
        span.setStatus({ code: SpanStatusCode.ERROR, message: ConnectError.from(error).rawMessage });
      }
      span.end();
    };
    let res;
    try {
      res = await next(req);
    } catch (error) {
      finish(error);
      throw error;
    }
    if (!res.stream) {
      finish();
      return res;
    }
    let failure: unknown;
    return guardStream(res, {
      mapError: (error) => (failure = error),
      finally: () => finish(failure),
    });
  };
}
