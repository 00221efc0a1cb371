// GetEntry load over gRPC for the benchmarks: callers round-robin over
// tenants' entries, with the CPU time of the server, of the callers, of
// PostgreSQL and of the rest of the machine, and memory, read from /proc.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { readFile } from "node:fs/promises";
import { EntryService } from "../gen/tenantry/backend/v1/entry_service_pb.js";
import { startCpuMeter, type CpuUse } from "./cpu-meter.ts";

/** An entry to read, with its tenant and an access token of that tenant. */
export interface Target {
  tenantId: string;
  token: string;
  id: string;
}

/** One measured round against one server. */
export interface Round {
  calls: number;
  errors: number;
  latencies: number[];
  seconds: number;
  /** CPU seconds used during the round, by whom. */
  cpu: CpuUse;
}

/** What {@link driveGetEntry} drives. */
export interface GetEntryLoad {
  targets: Target[];
  /** Callers, each waiting for its answer before its next call. */
  concurrency: number;
  /** Seconds. */
  duration: number;
  /** Ends the round before `duration` when aborted (the work measured beside it has ended). */
  signal?: AbortSignal;
  /** The server's process id, for its CPU time. */
  serverPid: number;
  /** PostgreSQL's postmaster, for the CPU time of PostgreSQL. */
  postmasterPid: number;
  /** The targets' indices in the order they are called, over and over; round-robin when unset. */
  order?: Uint32Array;
  /** Ends the round once this many calls have been made, before `duration` if it comes first. */
  calls?: number;
}

/** Drives GetEntry at `address` with `concurrency` callers for `duration` s, round-robin over the targets. */
export async function driveGetEntry(address: string, options: GetEntryLoad): Promise<Round> {
  const { targets } = options;
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  const method = EntryService.method.getEntry;
  const serialize = (m: unknown) => Buffer.from(toBinary(method.input, m as never));
  const deserialize = (b: Buffer) => fromBinary(method.output, b);
  const metadata = targets.map((t) => {
    const md = new grpc.Metadata();
    md.set("x-tenant-id", t.tenantId);
    md.set("authorization", `Bearer ${t.token}`);
    return md;
  });
  const requests = targets.map((t) => create(method.input, { id: t.id }));
  // The channel connects before the clock starts.
  await new Promise<void>((resolve, reject) => client.waitForReady(Date.now() + 10_000, (error) => (error ? reject(error) : resolve())));
  const cpuUsed = await startCpuMeter(options.serverPid, options.postmasterPid);
  let next = 0;
  let errors = 0;
  const latencies: number[] = [];
  const stopAt = performance.now() + options.duration * 1000;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: options.concurrency }, async () => {
      while (performance.now() < stopAt && options.signal?.aborted !== true && next < (options.calls ?? Infinity)) {
        const i = options.order === undefined ? next++ % targets.length : options.order[next++ % options.order.length]!;
        const t0 = performance.now();
        await new Promise<void>((resolve) =>
          client.makeUnaryRequest(`/${EntryService.typeName}/GetEntry`, serialize, deserialize, requests[i]!, metadata[i]!, (error, value) => {
            if (error || (value as { entry?: { id: string } })?.entry?.id !== targets[i]!.id) {
              if (errors++ === 0) {
                process.stderr.write(`first failure from ${address}: ${error?.message ?? JSON.stringify(value)}\n`);
              }
            }
            resolve();
          }),
        );
        latencies.push(performance.now() - t0);
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  const cpu = await cpuUsed();
  client.close();
  return { calls: latencies.length, errors, latencies, seconds: elapsed, cpu };
}

/** Rounds of one server summed up. */
export interface Summary {
  /** Calls per second over all rounds. */
  rps: number;
  /** Latency quantiles, ms. */
  p50: number;
  p99: number;
  errors: number;
  calls: number;
  /** Server CPU per call, ms. */
  cpuPerCall: number;
  /** PostgreSQL CPU per call, ms. */
  postgresPerCall: number;
  /** The server's read and write system calls per call. */
  readsPerCall: number;
  writesPerCall: number;
  /** The callers' CPU per call, ms. */
  clientPerCall: number;
  /** Cores the rest of the machine kept busy during the rounds, on average. */
  othersCores: number;
}

/** Throughput, latency quantiles (ms), errors and CPU per call over rounds. */
export function summarize(rounds: Round[]): Summary {
  const latencies = rounds.flatMap((r) => r.latencies).sort((a, b) => a - b);
  const calls = rounds.reduce((n, r) => n + r.calls, 0);
  const secs = rounds.reduce((n, r) => n + r.seconds, 0);
  const q = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))]!;
  const sum = (key: keyof CpuUse) => rounds.reduce((n, r) => n + r.cpu[key], 0);
  return {
    rps: calls / secs,
    p50: q(0.5),
    p99: q(0.99),
    errors: rounds.reduce((n, r) => n + r.errors, 0),
    calls,
    cpuPerCall: (sum("server") * 1000) / calls,
    postgresPerCall: (sum("postgres") * 1000) / calls,
    clientPerCall: (sum("client") * 1000) / calls,
    readsPerCall: sum("serverReads") / calls,
    writesPerCall: sum("serverWrites") / calls,
    othersCores: sum("others") / secs,
  };
}

/** A process's resident memory now and at its peak, in MB. */
export async function memoryOf(pid: number): Promise<{ rss: number; peak: number }> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  return { rss: Number(/VmRSS:\s+(\d+)/.exec(status)![1]) / 1024, peak: Number(/VmHWM:\s+(\d+)/.exec(status)![1]) / 1024 };
}
