import { cors, createContextValues, type Interceptor, type ServiceImplSpec } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import { tenantIdHeader } from "../wire/tenant-id.ts";
import { kPeer } from "./peer-context.ts";

/** Options of {@link createHttpServer}. */
export interface HttpServerOptions {
  /** The services to serve, each an implementation spec of a Connect ServiceImpl. */
  services: ServiceImplSpec[];
  /** The service's interceptor chain, the same one the gRPC listener runs. */
  interceptors: Interceptor[];
  /** Browser origins allowed to call (CORS); requests from any other origin are refused. */
  corsOrigins: string[];
  /** Aborted when the server shuts down. */
  shutdownSignal: AbortSignal;
  /** Answers `GET /readyz`: ready to take traffic. */
  ready: () => boolean;
  /** Answers `GET /metrics` (Prometheus text format). */
  metrics: (req: http.IncomingMessage, res: http.ServerResponse) => void;
}

/** The HTTP listener of a service: a `net.Server` plus what graceful shutdown needs. */
export interface HttpServer {
  /** Accepts connections; listen on it. */
  server: net.Server;
  /** Stops taking new requests, lets those in flight finish, and closes idle connections. */
  drain(): void;
  /** Destroys every connection at once. */
  destroy(): void;
}

const allowedHeaders = [...cors.allowedHeaders, tenantIdHeader, "authorization", "traceparent", "tracestate"].join(", ");
const exposedHeaders = cors.exposedHeaders.join(", ");
const allowedMethods = cors.allowedMethods.join(", ");

/**
 * Creates the HTTP listener of a service: Connect, gRPC-Web and gRPC over
 * HTTP/1.1 and cleartext HTTP/2 on one port (the first bytes of a connection
 * tell them apart), CORS for allow-listed browser origins, plain
 * `GET /healthz` and `GET /readyz` for load balancers and Kubernetes, and
 * `GET /metrics` for Prometheus.
 */
export function createHttpServer(options: HttpServerOptions): HttpServer {
  const rpc = connectNodeAdapter({
    interceptors: options.interceptors,
    shutdownSignal: options.shutdownSignal,
    contextValues: (req) => createContextValues().set(kPeer, req.socket.remoteAddress ?? ""),
    routes(router) {
      for (const spec of options.services) {
        for (const method of Object.values(spec.methods)) {
          router.rpc(method.method, method.impl as never);
        }
      }
    },
  });
  const origins = new Set(options.corsOrigins);

  function handle(req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) {
    // Both response kinds have this shape; TypeScript cannot call a union of overloads.
    const reply = res as http.ServerResponse;
    const path = (req.url ?? "/").split("?")[0];
    if (req.method === "GET" && (path === "/healthz" || path === "/readyz")) {
      const ok = path === "/healthz" || options.ready();
      reply.writeHead(ok ? 200 : 503, { "content-type": "text/plain; charset=utf-8" });
      res.end(ok ? "ok\n" : "shutting down\n");
      return;
    }
    if (req.method === "GET" && path === "/metrics") {
      options.metrics(req as http.IncomingMessage, reply);
      return;
    }
    const origin = req.headers.origin;
    if (origin !== undefined) {
      if (!origins.has(origin)) {
        reply.writeHead(403, { "content-type": "text/plain; charset=utf-8" });
        res.end(`origin ${origin} is not allowed; add it to TENANTRY_CORS_ORIGINS\n`);
        return;
      }
      res.setHeader("access-control-allow-origin", origin);
      res.setHeader("vary", "origin");
      if (req.method === "OPTIONS") {
        reply.writeHead(204, {
          "access-control-allow-methods": allowedMethods,
          "access-control-allow-headers": allowedHeaders,
          "access-control-max-age": "7200",
        });
        res.end();
        return;
      }
      res.setHeader("access-control-expose-headers", exposedHeaders);
    }
    rpc(req, res);
  }

  const h1 = http.createServer(handle);
  const h2 = http2.createServer(handle);
  const sessions = new Set<http2.ServerHttp2Session>();
  h2.on("session", (session) => {
    sessions.add(session);
    session.on("close", () => sessions.delete(session));
  });
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.once("data", (chunk: Buffer) => {
      socket.pause();
      socket.unshift(chunk);
      if (chunk.subarray(0, 3).toString("latin1") === "PRI") {
        // HTTP/2 prior knowledge. Not resumed: the http2 session reads the preface itself.
        h2.emit("connection", socket);
      } else {
        h1.emit("connection", socket);
        socket.resume();
      }
    });
  });
  return {
    server,
    drain() {
      server.close();
      h1.close();
      h1.closeIdleConnections();
      for (const session of sessions) {
        session.close();
      }
    },
    destroy() {
      for (const socket of sockets) {
        socket.destroy();
      }
    },
  };
}
