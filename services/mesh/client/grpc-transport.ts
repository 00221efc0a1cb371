import { fromBinary, toBinary, type DescMessage, type DescMethod, type DescMethodStreaming, type DescMethodUnary } from "@bufbuild/protobuf";
import { Code, ConnectError, createContextKey, createContextValues, type ContextValues, type Interceptor, type StreamResponse, type Transport, type UnaryResponse } from "@connectrpc/connect";
import { runStreamingCall, runUnaryCall } from "@connectrpc/connect/protocol";
import * as grpc from "@grpc/grpc-js";
import { headersFromMetadata, metadataFromHeaders } from "../wire/metadata.ts";
import { clientTelemetryInterceptor } from "./client-telemetry-interceptor.ts";

type HeadersInit = ConstructorParameters<typeof Headers>[0];

/** Options of {@link createGrpcJsTransport}. */
export interface GrpcJsTransportOptions {
  /** `host:port` of the service's gRPC listener. */
  address: string;
  /** Client interceptors (Connect kind), run on every call. */
  interceptors?: Interceptor[];
  /** grpc-js channel options. */
  channelOptions?: grpc.ChannelOptions;
  /**
   * Calls wait (up to their deadline) for the peer to be reachable instead
   * of failing at once while it is down or restarting. Give such calls a
   * timeout.
   */
  waitForReady?: boolean;
}

/**
 * A call's own say on waiting for its peer (see
 * {@link GrpcJsTransportOptions.waitForReady}), given in the call's
 * `contextValues`: true makes this one call wait, whatever its transport's
 * default.
 */
export const waitForReadyKey = createContextKey<boolean>(false, { description: "wait for the peer to be reachable" });

/** A Connect transport over a grpc-js channel; `close()` releases the channel. */
export interface GrpcJsTransport extends Transport {
  close(): void;
  /**
   * Which connection the channel holds: a number that changes whenever its
   * state does (the peer restarted or the connection was lost, then made
   * again), undefined while it is not READY. Two equal numbers mean that
   * every call made between them went over the one same connection.
   */
  connection(): number | undefined;
}

/**
 * Creates a Connect transport that speaks gRPC through `@grpc/grpc-js`, for
 * typed mesh clients: `createClient(Service, transport)`. Calls get Connect
 * client interceptors, after one that traces them and passes the trace on;
 * the wire is grpc-js's HTTP/2 channel.
 */
export function createGrpcJsTransport(options: GrpcJsTransportOptions): GrpcJsTransport {
  const client = new grpc.Client(options.address, grpc.credentials.createInsecure(), {
    // A mesh peer that restarts is back within seconds: do not wait minutes to try again, nor more
    // than 2 s (2.4 with jitter) after it is back, which calls waiting for it (up to their deadline) sit out.
    "grpc.initial_reconnect_backoff_ms": 250,
    "grpc.max_reconnect_backoff_ms": 2000,
    // Its own connections: one client's failed attempts must not fail fast another's calls.
    "grpc.use_local_subchannel_pool": 1,
    ...options.channelOptions,
  });
  const interceptors = [clientTelemetryInterceptor(), ...(options.interceptors ?? [])];
  const channel = client.getChannel();
  let changes = 0;
  const watch = (): void => {
    const state = channel.getConnectivityState(false);
    if (state !== grpc.connectivityState.SHUTDOWN) {
      // No deadline: no timer, nothing keeps the process alive.
      channel.watchConnectivityState(state, Infinity, () => {
        changes++;
        watch();
      });
    }
  };
  watch();

  function metadataOf(header: Headers, contextValues: ContextValues): grpc.Metadata {
    const metadata = metadataFromHeaders(header);
    if (options.waitForReady || contextValues.get(waitForReadyKey)) {
      metadata.setOptions({ waitForReady: true });
    }
    return metadata;
  }

  function callOptions(timeoutMs: number | undefined): grpc.CallOptions {
    return timeoutMs === undefined ? {} : { deadline: Date.now() + timeoutMs };
  }

  /** What unary and streaming requests share. */
  function common(method: DescMethod, header: HeadersInit | undefined, contextValues: ContextValues | undefined) {
    return {
      service: method.parent,
      requestMethod: "POST",
      url: `grpc://${options.address}/${method.parent.typeName}/${method.name}`,
      header: new Headers(header),
      contextValues: contextValues ?? createContextValues(),
    };
  }

  return {
    close: () => client.close(),
    connection: () => (channel.getConnectivityState(false) === grpc.connectivityState.READY ? changes : undefined),
    unary<I extends DescMessage, O extends DescMessage>(
      method: DescMethodUnary<I, O>,
      signal: AbortSignal | undefined,
      timeoutMs: number | undefined,
      header: HeadersInit | undefined,
      input: unknown,
      contextValues?: ContextValues,
    ): Promise<UnaryResponse<I, O>> {
      return runUnaryCall<I, O>({
        interceptors,
        signal,
        timeoutMs,
        req: { ...common(method, header, contextValues), stream: false, method, message: input as never },
        next: (req) =>
          new Promise<UnaryResponse<I, O>>((resolve, reject) => {
            let responseHeader = new Headers();
            let output: unknown;
            const call = client.makeUnaryRequest(
              `/${method.parent.typeName}/${method.name}`,
              (m: unknown) => Buffer.from(toBinary(method.input, m as never)),
              (b: Buffer) => fromBinary(method.output, b),
              req.message,
              metadataOf(req.header, req.contextValues),
              callOptions(timeoutMs),
              (error, value) => {
                output = value;
                if (error) {
                  reject(connectErrorOf(error));
                }
              },
            );
            call.on("metadata", (md) => (responseHeader = headersFromMetadata(md)));
            call.on("status", (status) => {
              if (status.code === grpc.status.OK) {
                resolve({
                  stream: false,
                  service: method.parent,
                  method,
                  header: responseHeader,
                  trailer: headersFromMetadata(status.metadata),
                  message: output as never,
                });
              }
            });
            cancelOnAbort(req.signal, call);
          }),
      });
    },
    stream<I extends DescMessage, O extends DescMessage>(
      method: DescMethodStreaming<I, O>,
      signal: AbortSignal | undefined,
      timeoutMs: number | undefined,
      header: HeadersInit | undefined,
      input: AsyncIterable<unknown>,
      contextValues?: ContextValues,
    ): Promise<StreamResponse<I, O>> {
      return runStreamingCall<I, O>({
        interceptors,
        signal,
        timeoutMs,
        req: { ...common(method, header, contextValues), stream: true, method, message: input as never },
        next: async (req) => {
          const path = `/${method.parent.typeName}/${method.name}`;
          const serialize = (m: unknown) => Buffer.from(toBinary(method.input, m as never));
          const deserialize = (b: Buffer) => fromBinary(method.output, b);
          const metadata = metadataOf(req.header, req.contextValues);
          let call: grpc.ClientReadableStream<unknown> | grpc.ClientDuplexStream<unknown, unknown>;
          if (method.methodKind === "server_streaming") {
            let single: unknown;
            for await (const m of req.message) {
              single = m;
            }
            call = client.makeServerStreamRequest(path, serialize, deserialize, single, metadata, callOptions(timeoutMs));
          } else {
            const duplex = client.makeBidiStreamRequest(path, serialize, deserialize, metadata, callOptions(timeoutMs));
            call = duplex;
            void (async () => {
              try {
                for await (const m of req.message) {
                  if (!duplex.write(m)) {
                    await new Promise((resolve) => duplex.once("drain", resolve));
                  }
                }
                duplex.end();
              } catch {
                duplex.cancel();
              }
            })();
          }
          cancelOnAbort(req.signal, call);
          const trailer = new Headers();
          call.on("status", (status: grpc.StatusObject) => {
            headersFromMetadata(status.metadata).forEach((value, key) => trailer.append(key, value));
          });
          const responseHeader = await new Promise<Headers>((resolve, reject) => {
            call.once("metadata", (md: grpc.Metadata) => resolve(headersFromMetadata(md)));
            call.once("error", (error: grpc.ServiceError) => reject(connectErrorOf(error)));
            call.once("status", () => resolve(new Headers()));
          });
          async function* messages() {
            try {
              for await (const message of call) {
                yield message;
              }
            } catch (error) {
              throw connectErrorOf(error as grpc.ServiceError);
            }
          }
          return {
            stream: true,
            service: method.parent,
            method,
            header: responseHeader,
            trailer,
            message: messages() as never,
          };
        },
      });
    },
  };
}

/** Cancels the call when the signal aborts, including when it already has (its event is then past). */
function cancelOnAbort(signal: AbortSignal, call: { cancel(): void }): void {
  if (signal.aborted) {
    call.cancel();
    return;
  }
  signal.addEventListener("abort", () => call.cancel(), { once: true });
}

function connectErrorOf(error: grpc.ServiceError): ConnectError {
  if (error instanceof ConnectError) {
    return error;
  }
  const code = typeof error.code === "number" && error.code in Code ? (error.code as number as Code) : Code.Unknown;
  return new ConnectError(error.details ?? error.message, code, error.metadata ? headersFromMetadata(error.metadata) : undefined);
}
