import type { DescService } from "@bufbuild/protobuf";
import { createServiceImplSpec, type Interceptor, type ServiceImpl } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import type { AddressInfo } from "node:net";
import type { MeshCredentials } from "../access/credentials.ts";
import type { TokenVerifier } from "../access/user-tokens.ts";
import type { Logger } from "../telemetry/logger.ts";
import type { Telemetry } from "../telemetry/telemetry.ts";
import type { Tenancy } from "../tenancy/tenancy.ts";
import { createGrpcServer } from "./grpc-server.ts";
import { Health, HealthStatus, healthService, ServingStatus } from "./health-service.ts";
import { createHttpServer } from "./http-server.ts";
import { InFlightCalls } from "./in-flight-calls.ts";
import { interceptorChain } from "./interceptor-chain.ts";
import { reflectionService, ServerReflection, ServerReflectionAlpha } from "./reflection-service.ts";

/** A service and its implementation. */
export interface ServiceRegistration {
  service: DescService;
  impl: Partial<ServiceImpl<any>>;
}

/** Options of {@link startMeshServer}. */
export interface MeshServerOptions {
  /** The service's name, such as "backend", for logs. */
  name: string;
  /** The RPC services to serve; health and reflection are added. */
  services: ServiceRegistration[];
  /** Interceptors after the mesh's own (see `interceptorChain`), outermost first. */
  interceptors: Interceptor[];
  /** Checks each call's credential against the method's declared access. */
  credentials: MeshCredentials;
  /** Verifies users' access tokens on TENANT methods; services without such methods need none. */
  userTokens?: TokenVerifier;
  /** Binds TENANT methods' calls to their tenant's database; services that serve no tenant data have none. */
  tenancy?: Tenancy;
  /** Address to bind both listeners to. */
  host: string;
  /** gRPC listener port; 0 picks a free one. */
  grpcPort: number;
  /** HTTP listener port; 0 picks a free one. */
  httpPort: number;
  /** Browser origins allowed on the HTTP port. */
  corsOrigins: string[];
  /** How long in-flight calls may run once shutdown starts. */
  shutdownGraceMs: number;
  /** Runs as soon as shutdown starts: end long-lived streams here so that the calls can finish. */
  onDrain?: () => unknown;
  /** Runs after the listeners have stopped and the calls have finished: close pools here. */
  onShutdown?: () => Promise<void>;
  log: Logger;
  /** The process's telemetry: every call is traced and measured, and the HTTP port serves `GET /metrics`. */
  telemetry: Telemetry;
}

/** The listener settings every service reads (see `commonEnv`), as {@link MeshServerOptions}. */
export function listenerOptions(config: {
  TENANTRY_BIND_HOST: string;
  TENANTRY_GRPC_PORT: number;
  TENANTRY_HTTP_PORT: number;
  TENANTRY_CORS_ORIGINS: string[];
  TENANTRY_SHUTDOWN_GRACE_MS: number;
}): Pick<MeshServerOptions, "host" | "grpcPort" | "httpPort" | "corsOrigins" | "shutdownGraceMs"> {
  return {
    host: config.TENANTRY_BIND_HOST,
    grpcPort: config.TENANTRY_GRPC_PORT,
    httpPort: config.TENANTRY_HTTP_PORT,
    corsOrigins: config.TENANTRY_CORS_ORIGINS,
    shutdownGraceMs: config.TENANTRY_SHUTDOWN_GRACE_MS,
  };
}

/** A running service process's listeners. */
export interface MeshServer {
  /** The bound gRPC port. */
  grpcPort: number;
  /** The bound HTTP port. */
  httpPort: number;
  /** Calls running now. */
  inFlight(): number;
  /**
   * Stops taking calls, lets those in flight finish for up to the grace
   * period, cuts the rest, then runs `onShutdown`. Safe to call twice.
   */
  shutdown(): Promise<void>;
}

/**
 * Starts a service's two listeners over one set of implementations and one
 * interceptor chain: gRPC on grpc-js, and Connect, gRPC-Web and gRPC on the
 * HTTP port. Both serve health and reflection; the HTTP port also serves
 * `GET /metrics`.
 */
export async function startMeshServer(options: MeshServerOptions): Promise<MeshServer> {
  const { log, telemetry } = options;
  const shutdownController = new AbortController();
  const health = new HealthStatus(options.services.map((s) => s.service.typeName));
  const reflection = reflectionService([...options.services.map((s) => s.service), Health, ServerReflection, ServerReflectionAlpha]);
  const specs = [
    ...options.services.map((s) => createServiceImplSpec(s.service, s.impl)),
    createServiceImplSpec<typeof Health>(Health, healthService(health)),
    createServiceImplSpec<typeof ServerReflection>(ServerReflection, reflection.v1),
    createServiceImplSpec<typeof ServerReflectionAlpha>(ServerReflectionAlpha, reflection.v1alpha),
  ];
  const inFlight = new InFlightCalls();
  const interceptors = interceptorChain({
    telemetry,
    log,
    inFlight,
    credentials: options.credentials,
    userTokens: options.userTokens,
    tenancy: options.tenancy,
    interceptors: options.interceptors,
  });

  const grpcServer = createGrpcServer({ services: specs, interceptors, shutdownSignal: shutdownController.signal });
  const grpcPort = await new Promise<number>((resolve, reject) =>
    grpcServer.bindAsync(`${options.host}:${options.grpcPort}`, grpc.ServerCredentials.createInsecure(), (error, port) =>
      error ? reject(error) : resolve(port),
    ),
  );
  let draining = false;
  const http = createHttpServer({
    services: specs,
    interceptors,
    corsOrigins: options.corsOrigins,
    shutdownSignal: shutdownController.signal,
    ready: () => !draining,
    metrics: telemetry.serveMetrics,
  });
  await new Promise<void>((resolve, reject) => {
    http.server.once("error", reject);
    http.server.listen(options.httpPort, options.host, () => {
      http.server.off("error", reject);
      resolve();
    });
  });
  const httpPort = (http.server.address() as AddressInfo).port;
  log.info({ grpcPort, httpPort, host: options.host }, `${options.name} listening`);

  let stopping: Promise<void> | undefined;
  async function stop(): Promise<void> {
    draining = true;
    health.setAll(ServingStatus.NOT_SERVING);
    const started = Date.now();
    log.info({ inFlight: inFlight.count }, `${options.name} shutting down`);
    await options.onDrain?.();
    const grpcDone = new Promise<void>((resolve) => grpcServer.tryShutdown(() => resolve()));
    http.drain();
    const callsDone = inFlight.settled();
    const timer = new Promise<"timeout">((resolve) => setTimeout(() => resolve("timeout"), options.shutdownGraceMs).unref());
    const outcome = await Promise.race([Promise.all([grpcDone, callsDone]), timer]);
    if (outcome === "timeout") {
      log.warn({ inFlight: inFlight.count }, "grace period over; cutting the calls still running");
      shutdownController.abort();
      grpcServer.forceShutdown();
    }
    http.destroy();
    await options.onShutdown?.();
    log.info({ ms: Date.now() - started }, `${options.name} stopped`);
  }

  return {
    grpcPort,
    httpPort,
    inFlight: () => inFlight.count,
    shutdown() {
      stopping ??= stop();
      return stopping;
    },
  };
}
