// GetEntry load over gRPC for the benchmarks: callers round-robin over
// tenants' entries, with the server's CPU time and memory read from /proc.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { readFile } from "node:fs/promises";
import { EntryService } from "../gen/tenantry/backend/v1/entry_service_pb.js";

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
  /** CPU seconds the server process used during the round. */
  cpu: number;
}

/** CPU seconds (user + system) a process has used so far. */
export async function cpuSeconds(pid: number): Promise<number> {
  const fields = (await readFile(`/proc/${pid}/stat`, "utf8")).split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Drives GetEntry at `address` with `concurrency` callers for `duration` s, round-robin over the targets. */
export async function driveGetEntry(address: string, options: { targets: Target[]; concurrency: number; duration: number; serverPid: number }): Promise<Round> {
  const { targets } = options;
  const cpuBefore = await cpuSeconds(options.serverPid);
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
  let next = 0;
  let errors = 0;
  const latencies: number[] = [];
  const stopAt = performance.now() + options.duration * 1000;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: options.concurrency }, async () => {
      while (performance.now() < stopAt) {
        const i = next++ % targets.length;
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
  client.close();
  return { calls: latencies.length, errors, latencies, seconds: elapsed, cpu: (await cpuSeconds(options.serverPid)) - cpuBefore };
}

/** Throughput, latency quantiles (ms), errors and server CPU per call over rounds. */
export function summarize(rounds: Round[]) {
  const latencies = rounds.flatMap((r) => r.latencies).sort((a, b) => a - b);
  const calls = rounds.reduce((n, r) => n + r.calls, 0);
  const secs = rounds.reduce((n, r) => n + r.seconds, 0);
  const q = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))]!;
  const cpu = rounds.reduce((n, r) => n + r.cpu, 0);
  return { rps: calls / secs, p50: q(0.5), p99: q(0.99), errors: rounds.reduce((n, r) => n + r.errors, 0), calls, cpuPerCall: (cpu * 1000) / calls };
}

/** A process's resident memory now and at its peak, in MB. */
export async function memoryOf(pid: number): Promise<{ rss: number; peak: number }> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  return { rss: Number(/VmRSS:\s+(\d+)/.exec(status)![1]) / 1024, peak: Number(/VmHWM:\s+(\d+)/.exec(status)![1]) / 1024 };
}
