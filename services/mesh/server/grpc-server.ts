import { create, fromBinary, toBinary, type DescMessage } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createContextValues,
  createHandlerContext,
  type Interceptor,
  type MethodImplSpec,
  type ServiceImplSpec,
} from "@connectrpc/connect";
import { createAsyncIterable, invokeUnaryImplementation, transformInvokeImplementation } from "@connectrpc/connect/protocol";
import * as grpc from "@grpc/grpc-js";
import { once } from "node:events";
import { headersFromMetadata, metadataFromHeaders } from "../wire/metadata.ts";
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
  for (const spec of options.services) {
    const definition: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
    const handlers: grpc.UntypedServiceImplementation = {};
    for (const method of Object.values(spec.methods)) {
      const name = method.method.name;
      definition[name] = methodDefinition(method);
      handlers[name] = methodHandler(method, options);
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

function handlerContext(spec: MethodImplSpec, call: AnyCall, shutdownSignal: AbortSignal) {
  const deadline = call.getDeadline();
  const deadlineMs = deadline instanceof Date ? deadline.getTime() : deadline;
  const ctx = createHandlerContext({
    service: spec.method.parent,
    method: spec.method,
    protocolName: "grpc",
    requestMethod: "POST",
    url: `http://${call.getHost()}/${spec.method.parent.typeName}/${spec.method.name}`,
    timeoutMs: Number.isFinite(deadlineMs) ? Math.max(0, deadlineMs - Date.now()) : undefined,
    shutdownSignal,
    requestHeader: headersFromMetadata(call.metadata),
    contextValues: createContextValues().set(kPeer, call.getPeer().replace(/^(ipv[46]:)?\[?([^\]]*?)\]?:\d+$/, "$2")),
  });
  (call as NodeJS.EventEmitter).on("cancelled", () => ctx.abort(new ConnectError("the client cancelled the call", Code.Canceled)));
  return ctx;
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

function sendHeader(call: AnyCall, header: Headers): void {
  let any = false;
  header.forEach(() => (any = true));
  if (any) {
    call.sendMetadata(metadataFromHeaders(header));
  }
}

function methodHandler(spec: MethodImplSpec, options: GrpcServerOptions): grpc.UntypedHandleCall {
  const { interceptors, shutdownSignal } = options;
  switch (spec.kind) {
    case "unary":
      return (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        const ctx = handlerContext(spec, call, shutdownSignal);
        invokeUnaryImplementation(spec, ctx, call.request as never, interceptors).then(
          (output) => {
            sendHeader(call, ctx.responseHeader);
            callback(null, output, metadataFromHeaders(ctx.responseTrailer));
            ctx.abort(completed);
          },
          (reason: unknown) => {
            callback(statusOf(reason, ctx.responseTrailer));
            ctx.abort(completed);
          },
        );
      };
    case "server_streaming":
    case "bidi_streaming":
    case "client_streaming": {
      const invoke = (call: AnyCall, input: AsyncIterable<unknown>) => {
        const ctx = handlerContext(spec, call, shutdownSignal);
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
            callback(null, result ?? create(spec.method.output), metadataFromHeaders(ctx.responseTrailer));
          })().then(
            () => ctx.abort(completed),
            (reason: unknown) => {
              callback(statusOf(reason, ctx.responseTrailer));
              ctx.abort(completed);
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
          () => ctx.abort(completed),
          (reason: unknown) => {
            if (!call.cancelled) {
              call.emit("error", statusOf(reason, ctx.responseTrailer));
            }
            ctx.abort(completed);
          },
        );
      };
    }
  }
}
