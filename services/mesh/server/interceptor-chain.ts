import type { Interceptor } from "@connectrpc/connect";
import { accessInterceptor } from "../access/access-interceptor.ts";
import type { MeshCredentials } from "../access/credentials.ts";
import type { TokenVerifier } from "../access/user-tokens.ts";
import type { Logger } from "../telemetry/logger.ts";
import type { Telemetry } from "../telemetry/telemetry.ts";
import type { Tenancy } from "../tenancy/tenancy.ts";
import { tenantInterceptor } from "../tenancy/tenant-interceptor.ts";
import { errorInterceptor } from "./error-interceptor.ts";
import type { InFlightCalls } from "./in-flight-calls.ts";
import { telemetryInterceptor } from "./telemetry-interceptor.ts";

/** Options of {@link interceptorChain}. */
export interface InterceptorChainOptions {
  /** The process's telemetry: spans and call metrics. */
  telemetry: Telemetry;
  /** Where failed calls are logged with their detail. */
  log: Logger;
  /** Counts the calls running, for a graceful shutdown. */
  inFlight: InFlightCalls;
  /** Checks each call's credential against the method's declared access. */
  credentials: MeshCredentials;
  /** Verifies users' access tokens on TENANT methods; services without such methods need none. */
  userTokens?: TokenVerifier;
  /** Routes TENANT methods' calls to their tenant's database; Platform, which serves no tenant data, has none. */
  tenancy?: Tenancy;
  /** The service's own interceptors, run last, just before the handler. */
  interceptors?: Interceptor[];
}

/**
 * The interceptor chain of every service, outermost first. Both listeners
 * run this one chain; this is the only place that orders it.
 */
export function interceptorChain(options: InterceptorChainOptions): Interceptor[] {
  return [
    // Outermost, so that a call's span and latency cover everything below,
    // refusals and errors included, and log lines below carry the trace id.
    telemetryInterceptor(options.telemetry, options.log),
    // Inside telemetry, so that the span and metrics record the code the
    // client gets: whatever fails below (a lost database connection, a bug)
    // becomes a ConnectError with no detail, logged with the call's trace id.
    errorInterceptor(options.log),
    // Before access, whose token checks may wait on Auth: shutdown waits for
    // every call it has let in, however far it got.
    options.inFlight.interceptor,
    // Before the tenant is resolved: a call without the right credential
    // costs no lookup at Platform and no EntityManager.
    accessInterceptor(options.credentials, options.userTokens),
    // Last before the handler: binds the call to its tenant's database, in
    // a scope that also wraps each step of a streaming response.
    ...(options.tenancy === undefined ? [] : [tenantInterceptor(options.tenancy)]),
    ...(options.interceptors ?? []),
  ];
}
