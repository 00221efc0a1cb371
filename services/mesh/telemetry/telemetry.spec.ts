import { propagation, ROOT_CONTEXT, trace, TraceFlags } from "@opentelemetry/api";
import { afterAll, describe, expect, it } from "vitest";
import { startTelemetry } from "./telemetry.ts";

// No OTLP endpoint: spans do not leave the process.
const telemetry = startTelemetry({ service: "test", tenantSeries: 10 }, {});
afterAll(() => telemetry.shutdown());

const traceId = "0af7651916cd43dd8448eb211c80319c";
const callerOf = (flags: string) => propagation.extract(ROOT_CONTEXT, { traceparent: `00-${traceId}-b7ad6b7169203331-${flags}` });

describe("server spans of a process that exports none", () => {
  it("record nothing and start a sampled trace of their own without a caller", () => {
    const span = telemetry.startServerSpan("tenantry.test.v1.TestService/Call", { "rpc.system": "grpc" }, ROOT_CONTEXT);
    const ids = span.spanContext();
    expect(span.isRecording()).toBe(false);
    expect(ids.traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(ids.spanId).toMatch(/^[0-9a-f]{16}$/);
    expect(ids.traceFlags).toBe(TraceFlags.SAMPLED);
    expect(telemetry.startServerSpan("x", {}, ROOT_CONTEXT).spanContext().traceId).not.toBe(ids.traceId);
  });

  it("join the caller's trace, sampled or not as the caller says", () => {
    for (const [flags, sampled] of [["01", TraceFlags.SAMPLED], ["00", TraceFlags.NONE]] as const) {
      const span = telemetry.startServerSpan("x", {}, callerOf(flags));
      expect(span.spanContext()).toMatchObject({ traceId, traceFlags: sampled });
      expect(span.spanContext().spanId).not.toBe("b7ad6b7169203331");
      // What a mesh call made under it carries on.
      const carrier: Record<string, string> = {};
      propagation.inject(trace.setSpan(ROOT_CONTEXT, span), carrier);
      expect(carrier.traceparent).toBe(`00-${traceId}-${span.spanContext().spanId}-${flags}`);
    }
  });
});
