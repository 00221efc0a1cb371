import { create, fromBinary, toBinary, type DescMessage } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createContextValues,
  type HandlerContext,
  type Interceptor,
  type MethodImplSpec,
  type ServiceImplSpec,
} from "@connectrpc/connect";
import { createAsyncIterable, invokeUnaryImplementation, transformInvokeImplementation } from "@connectrpc/connect/protocol";
import * as grpc from "@grpc/grpc-js";
import { once } from "node:events";
import { MetadataHeaders, metadataFromHeaders } from "../wire/metadata.ts";
import { kPeer } from "./peer-context.ts";

/** Options of {@link createGrpcServer}. */
export interface GrpcServerOptions {
  /** The services to serve, each an implementation spec of a Connect ServiceImpl. */
  services: ServiceImplSpec[];
  /** The service's interceptor chain, the same one the HTTP listener runs. */
  interceptors: Interceptor[];
  /** Aborted when the server shuts down, so handlers can stop long streams. */
  shutdownSignal: AbortSignal;
}

/**
 * Creates a `@grpc/grpc-js` server that serves Connect service
 * implementations through Connect interceptors. This is the fast, canonical
 * gRPC path; the HTTP listener serves the same implementations to browsers.
 */
export function createGrpcServer(options: GrpcServerOptions): grpc.Server {
  const server = new grpc.Server({ "grpc.max_receive_message_length": 4 * 1024 * 1024 });
  const calls = new RunningCalls(options.shutdownSignal);
  for (const spec of options.services) {
    const definition: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
    const handlers: grpc.UntypedServiceImplementation = {};
    for (const method of Object.values(spec.methods)) {
      const name = method.method.name;
      definition[name] = methodDefinition(method);
      handlers[name] = methodHandler(method, options.interceptors, calls);
    }
    server.addService(definition as grpc.ServiceDefinition, handlers);
  }
  return server;
}

/**
 * The reason a call's signal is aborted with once the call has ended. Shared,
 * because aborting without a reason builds a DOMException on every call.
 */
const completed = new ConnectError("the call has ended", Code.Canceled);

function methodDefinition(spec: MethodImplSpec): grpc.MethodDefinition<unknown, unknown> {
  const { method } = spec;
  return {
    path: `/${method.parent.typeName}/${method.name}`,
    requestStream: spec.kind === "client_streaming" || spec.kind === "bidi_streaming",
    responseStream: spec.kind === "server_streaming" || spec.kind === "bidi_streaming",
    requestSerialize: serializer(method.input),
    requestDeserialize: deserializer(method.input),
    responseSerialize: serializer(method.output),
    responseDeserialize: deserializer(method.output),
  };
}

function serializer(desc: DescMessage) {
  return (message: unknown): Buffer => {
    const bytes = toBinary(desc, message as never);
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
}

function deserializer(desc: DescMessage) {
  return (bytes: Buffer): unknown => fromBinary(desc, bytes);
}

type AnyCall = grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown> | grpc.ServerReadableStream<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>;

/**
 * The calls a server is running, so that its shutdown aborts their signals
 * with one listener on the shutdown signal rather than one per call.
 */
class RunningCalls {
  readonly #controllers = new Set<AbortController>();
  readonly #shutdown: AbortSignal;

  constructor(shutdown: AbortSignal) {
    this.#shutdown = shutdown;
    shutdown.addEventListener("abort", () => {
      for (const controller of this.#controllers) {
        controller.abort(shutdown.reason);
      }
      this.#controllers.clear();
    });
  }

  /** A call's controller, aborted at shutdown until `end` is called. */
  start(): AbortController {
    const controller = new AbortController();
    if (this.#shutdown.aborted) {
      controller.abort(this.#shutdown.reason);
    } else {
      this.#controllers.add(controller);
    }
    return controller;
  }

  end(controller: AbortController): void {
    this.#controllers.delete(controller);
  }
}

/** A handler context with the means to end it: `end(reason)` aborts its signal. */
type CallContext = HandlerContext & { end(reason: unknown): void };

const noTimeout = () => undefined;

/**
 * The context of a call, built from the call as it is: its metadata is read
 * in place as the request header, and its signal is aborted by the deadline,
 * the client's cancellation, the server's shutdown or the call's end.
 */
function handlerContext(spec: MethodImplSpec, call: AnyCall, calls: RunningCalls): CallContext {
  const controller = calls.start();
  const deadline = call.getDeadline();
  const deadlineMs = deadline instanceof Date ? deadline.getTime() : deadline;
  let timer: NodeJS.Timeout | undefined;
  let timeoutMs: () => number | undefined = noTimeout;
  if (Number.isFinite(deadlineMs)) {
    timeoutMs = () => deadlineMs - Date.now();
    timer = setTimeout(() => end(new ConnectError("the operation timed out", Code.DeadlineExceeded)), Math.max(0, deadlineMs - Date.now()));
  }
  const end = (reason: unknown) => {
    clearTimeout(timer);
    calls.end(controller);
    if (!controller.signal.aborted) {
      controller.abort(reason);
    }
  };
  const method = spec.method;
  (call as NodeJS.EventEmitter).on("cancelled", () => {
    // grpc-js also says so once a call that has ended closes its stream.
    if (!controller.signal.aborted) {
      end(new ConnectError("the client cancelled the call", Code.Canceled));
    }
  });
  return {
    service: method.parent,
    method,
    protocolName: "grpc",
    requestMethod: "POST",
    url: `http://${call.getHost()}/${method.parent.typeName}/${method.name}`,
    signal: controller.signal,
    timeoutMs,
    requestHeader: new MetadataHeaders(call.metadata),
    responseHeader: new Headers(),
    responseTrailer: new Headers(),
    values: createContextValues().set(kPeer, peerAddress(call.getPeer())),
    end,
  };
}

let lastPeer = { peer: "", address: "" };

/** The address of a peer such as `ipv4:127.0.0.1:5000` or `[::1]:5000`; the calls of one connection share it. */
function peerAddress(peer: string): string {
  if (lastPeer.peer !== peer) {
    lastPeer = { peer, address: peer.replace(/^(ipv[46]:)?\[?([^\]]*?)\]?:\d+$/, "$2") };
  }
  return lastPeer.address;
}

function statusOf(reason: unknown, trailer: Headers): Partial<grpc.StatusObject> {
  const error = ConnectError.from(reason);
  const metadata = metadataFromHeaders(trailer);
  error.metadata.forEach((value, key) => {
    if (!key.startsWith("grpc-")) {
      metadata.set(key, value);
    }
  });
  return { code: error.code as number as grpc.status, details: error.rawMessage, metadata };
}

function isEmpty(headers: Headers): boolean {
  for (const _ of headers.keys()) {
    return false;
  }
  return true;
}

function sendHeader(call: AnyCall, header: Headers): void {
  if (!isEmpty(header)) {
    call.sendMetadata(metadataFromHeaders(header));
  }
}

/** A trailer's metadata; none for an empty trailer, which grpc-js then sends as it would anyway. */
function trailerOf(trailer: Headers): grpc.Metadata | undefined {
  return isEmpty(trailer) ? undefined : metadataFromHeaders(trailer);
}

function methodHandler(spec: MethodImplSpec, interceptors: Interceptor[], calls: RunningCalls): grpc.UntypedHandleCall {
  switch (spec.kind) {
    case "unary":
      return (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        const ctx = handlerContext(spec, call, calls);
        invokeUnaryImplementation(spec, ctx, call.request as never, interceptors).then(
          (output) => {
            sendHeader(call, ctx.responseHeader);
            callback(null, output, trailerOf(ctx.responseTrailer));
            ctx.end(completed);
          },
          (reason: unknown) => {
            callback(statusOf(reason, ctx.responseTrailer));
            ctx.end(completed);
          },
        );
      };
    case "server_streaming":
    case "bidi_streaming":
    case "client_streaming": {
      const invoke = (call: AnyCall, input: AsyncIterable<unknown>) => {
        const ctx = handlerContext(spec, call, calls);
        return { ctx, output: transformInvokeImplementation(spec, ctx, interceptors)(input as never) };
      };
      if (spec.kind === "client_streaming") {
        return (call: grpc.ServerReadableStream<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
          const { ctx, output } = invoke(call, call);
          (async () => {
            let result: unknown;
            for await (const message of output) {
              result = message;
            }
            sendHeader(call, ctx.responseHeader);
            callback(null, result ?? create(spec.method.output), trailerOf(ctx.responseTrailer));
          })().then(
            () => ctx.end(completed),
            (reason: unknown) => {
              callback(statusOf(reason, ctx.responseTrailer));
              ctx.end(completed);
            },
          );
        };
      }
      return (call: grpc.ServerWritableStream<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>) => {
        const input: AsyncIterable<unknown> =
          spec.kind === "server_streaming" ? createAsyncIterable([(call as grpc.ServerWritableStream<unknown, unknown>).request]) : (call as grpc.ServerDuplexStream<unknown, unknown>);
        const { ctx, output } = invoke(call, input);
        let headerSent = false;
        (async () => {
          for await (const message of output) {
            if (!headerSent) {
              sendHeader(call, ctx.responseHeader);
              headerSent = true;
            }
            if (!call.write(message)) {
              await once(call, "drain", { signal: ctx.signal });
            }
          }
          if (!headerSent) {
            sendHeader(call, ctx.responseHeader);
          }
          call.end(metadataFromHeaders(ctx.responseTrailer));
        })().then(
          () => ctx.end(completed),
          (reason: unknown) => {
            if (!call.cancelled) {
              call.emit("error", statusOf(reason, ctx.responseTrailer));
            }
            ctx.end(completed);
          },
        );
      };
    }
  }
}
