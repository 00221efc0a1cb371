// npm run bench:cold-tenants: Backend serving BENCH_TENANTS (default 2,000)
// dedicated tenants, each its own database and role on one PostgreSQL
// server, within a budget of BENCH_BUDGET (default 64) connections, tokens
// verified and telemetry on. In interleaved rounds (the order turning each
// round, warm-up excluded), four loads of BENCH_CONCURRENCY (default 32)
// callers are measured side by side:
//   - bare cold opens: a loop that opens one fresh pg connection per call
//     with the tenant's credentials, reads the entry and closes it, no
//     gRPC: the physical floor of a cold open;
//   - Backend, uniform traffic over every tenant (round-robin);
//   - Backend, Zipf(1.1) traffic over the same tenants;
//   - Backend, the same load over 10 hot tenants.
// The server's connections of the tenants' roles are sampled from
// pg_stat_activity while Backend is measured, to show they never exceed the
// budget; errors are counted by gRPC code. Before the rounds, serial cold
// opens say what one costs, step by step.
// BENCH_SECONDS (default 24) measured per load, BENCH_ROUNDS (default 4),
// BENCH_WARMUP_SECONDS (default 2), BENCH_SCRAM_ITERATIONS (PostgreSQL's
// default 4096: the cost of the tenants' password verifiers).
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { EntryService } from "../gen/tenantry/backend/v1/entry_service_pb.js";
import { freePort } from "../services/testing/free-port.ts";
import { quantile, root, startBenchProcesses } from "./bench-processes.ts";
import { startCpuMeter, type CpuUse } from "./cpu-meter.ts";
import { goalTable, table } from "./report.ts";

const tenantCount = Number(process.env.BENCH_TENANTS ?? 2000);
const budget = Number(process.env.BENCH_BUDGET ?? 64);
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 32);
const seconds = Number(process.env.BENCH_SECONDS ?? 24);
const roundCount = Number(process.env.BENCH_ROUNDS ?? 4);
const warmUpSeconds = Number(process.env.BENCH_WARMUP_SECONDS ?? 2);
const scramIterations = Number(process.env.BENCH_SCRAM_ITERATIONS ?? 4096);
const hotTenants = 10;
const zipfExponent = 1.1;
const entryId = "00000000-0000-4000-8000-000000000001";
const entrySql = "select id, title, body, tags, version, created_at, updated_at from backend.entries where id = $1";

const bench = await startBenchProcesses({ ephemeral: true });
const { database } = bench;
const server = new URL(database.url);
/** Connection settings of tenant `n`, as its route gives them. */
const credentials = (n: number): pg.ClientConfig => ({
  host: server.hostname,
  port: Number(server.port),
  database: `cold_${n}`,
  user: `cold_${n}`,
  password: `cold-${n}`,
});

try {
  // Every tenant: a role of its own and a database of its own, copied from one template holding one entry.
  const admin = new pg.Client({ connectionString: database.url });
  await admin.connect();
  await admin.query("create database cold_template");
  const template = new pg.Client({ connectionString: database.urlFor("cold_template") });
  await template.connect();
  await template.query("create schema backend");
  await template.query(
    `create table backend.entries (id uuid primary key, title varchar(200) not null, body text not null default '', tags text[] not null default '{}', version integer not null default 1, created_at timestamptz(3) not null default now(), updated_at timestamptz(3) not null default now())`,
  );
  await template.query("insert into backend.entries (id, title, body, tags) values ($1, 'cold', $2, '{bench,entry}')", [entryId, "x".repeat(200)]);
  await template.query("grant usage on schema backend to public");
  await template.query("grant select, insert, update, delete on all tables in schema backend to public");
  await template.end();
  process.stdout.write(`creating ${tenantCount} databases and roles…\n`);
  const createStarted = performance.now();
  // Four sessions at once; FILE_COPY copies the template's files (a checkpoint each, cheap without fsync) rather than logging every page.
  let nextTenant = 0;
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      const session = new pg.Client({ connectionString: database.url });
      await session.connect();
      await session.query(`set scram_iterations = ${scramIterations}`);
      for (let n = nextTenant++; n < tenantCount; n = nextTenant++) {
        await session.query(`create role cold_${n} login password 'cold-${n}'`);
        await session.query(`create database cold_${n} template cold_template owner cold_${n} strategy file_copy`);
      }
      await session.end();
    }),
  );
  const createSeconds = (performance.now() - createStarted) / 1000;
  process.stdout.write(`  ${createSeconds.toFixed(1)} s (${((createSeconds * 1000) / tenantCount).toFixed(1)} ms per tenant)\n`);

  // What one cold open costs, serially, on an otherwise idle server: TCP and authentication, the first query, the goodbye.
  const steps = { connect: [] as number[], query: [] as number[], end: [] as number[] };
  for (let n = 0; n < Math.min(200, tenantCount); n++) {
    const t0 = performance.now();
    const client = new pg.Client(credentials(n));
    await client.connect();
    const t1 = performance.now();
    await client.query(entrySql, [entryId]);
    const t2 = performance.now();
    await client.end();
    steps.connect.push(t1 - t0);
    steps.query.push(t2 - t1);
    steps.end.push(performance.now() - t2);
  }
  const median = (values: number[]) => quantile([...values].sort((a, b) => a - b), 0.5);

  const { privateKey, publicKey } = await generateKeyPair("EdDSA", { crv: "Ed25519" });
  const grpcPort = await freePort();
  const backend = await bench.start(
    "backend (cold tenants)",
    path.join(root, "bench/backend-cold-tenants.ts"),
    {
      ...bench.shared,
      TENANTRY_GRPC_PORT: String(grpcPort),
      TENANTRY_HTTP_PORT: String(await freePort()),
      TENANTRY_PLATFORM_ADDRESS: "127.0.0.1:1",
      TENANTRY_AUTH_ADDRESS: "127.0.0.1:1",
      TENANTRY_DB_MAX_CONNECTIONS: String(budget),
      BENCH_SERVER_URL: database.url,
      BENCH_PUBLIC_JWK: JSON.stringify(await exportJWK(publicKey)),
    },
  );

  // One token per tenant, and the metadata of its calls, made before the clock starts.
  const metadata: grpc.Metadata[] = [];
  for (let n = 0; n < tenantCount; n++) {
    const token = await new SignJWT({ tid: `cold-${n}`, permissions: ["entries.read"] })
      .setProtectedHeader({ alg: "EdDSA", kid: `cold-${n}`, typ: "at+jwt" })
      .setIssuer("tenantry")
      .setSubject("user-1")
      .setIssuedAt()
      .setExpirationTime("2h")
      .sign(privateKey);
    const md = new grpc.Metadata();
    md.set("x-tenant-id", `cold-${n}`);
    md.set("authorization", `Bearer ${token}`);
    metadata.push(md);
  }

  /** Tenants in calling order: the same sequence every round. */
  const uniform = Array.from({ length: tenantCount }, (_, n) => n);
  const hot = Array.from({ length: hotTenants }, (_, n) => n);
  const zipf = (() => {
    const cumulative: number[] = [];
    let sum = 0;
    for (let rank = 1; rank <= tenantCount; rank++) {
      sum += 1 / rank ** zipfExponent;
      cumulative.push(sum);
    }
    // A fixed seed (mulberry32): every round calls the same tenants in the same order.
    let seed = 0x5eed;
    const random = () => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    return Array.from({ length: 50_000 }, () => {
      const x = random() * sum;
      let lo = 0;
      let hi = tenantCount - 1;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (cumulative[mid]! < x) lo = mid + 1;
        else hi = mid;
      }
      return lo;
    });
  })();

  interface Round {
    calls: number;
    errors: Map<string, number>;
    latencies: number[];
    seconds: number;
    cpu: CpuUse;
    /** Most connections of the tenants' roles seen at once in pg_stat_activity. */
    peakConnections: number;
  }
  interface Load {
    name: string;
    rounds: Round[];
    run(duration: number): Promise<Omit<Round, "cpu" | "peakConnections" | "seconds">>;
  }

  const client = new grpc.Client(`127.0.0.1:${grpcPort}`, grpc.credentials.createInsecure());
  await new Promise<void>((resolve, reject) => client.waitForReady(Date.now() + 10_000, (error) => (error ? reject(error) : resolve())));
  const method = EntryService.method.getEntry;
  const request = create(method.input, { id: entryId });
  const serialize = (m: unknown) => Buffer.from(toBinary(method.input, m as never));
  const deserialize = (b: Buffer) => fromBinary(method.output, b);

  /** `concurrency` callers, each waiting for its answer before its next call, over `order`, for `duration` s. */
  async function callers(order: number[], duration: number, call: (n: number) => Promise<string | undefined>) {
    let next = 0;
    const errors = new Map<string, number>();
    const latencies: number[] = [];
    const stopAt = performance.now() + duration * 1000;
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (performance.now() < stopAt) {
          const n = order[next++ % order.length]!;
          const t0 = performance.now();
          const failed = await call(n);
          latencies.push(performance.now() - t0);
          if (failed !== undefined) {
            if (errors.size === 0) {
              process.stderr.write(`first failure (tenant cold-${n}): ${failed}\n`);
            }
            errors.set(failed.split(":")[0]!, (errors.get(failed.split(":")[0]!) ?? 0) + 1);
          }
        }
      }),
    );
    return { calls: latencies.length, errors, latencies };
  }
  const getEntry = (n: number) =>
    new Promise<string | undefined>((resolve) =>
      client.makeUnaryRequest(`/${EntryService.typeName}/GetEntry`, serialize, deserialize, request, metadata[n]!, (error, value) => {
        if (error) {
          resolve(`${grpc.status[error.code]}: ${error.details}`);
        } else if ((value as { entry?: { id: string } })?.entry?.id !== entryId) {
          resolve(`WRONG_ANSWER: ${JSON.stringify(value)}`);
        } else {
          resolve(undefined);
        }
      }),
    );
  const bareOpen = async (n: number) => {
    const bare = new pg.Client({ ...credentials(n), application_name: "bench-bare" });
    try {
      await bare.connect();
      const { rows } = await bare.query(entrySql, [entryId]);
      return rows[0]?.id === entryId ? undefined : "WRONG_ANSWER: no entry";
    } catch (error) {
      return `PG_ERROR: ${(error as Error).message}`;
    } finally {
      await bare.end().catch(() => undefined);
    }
  };
  const bareLoad: Load = { name: `bare cold opens: one fresh pg connection per call, ${tenantCount} tenants`, rounds: [], run: (d) => callers(uniform, d, bareOpen) };
  const uniformLoad: Load = { name: `Tenantry, uniform over ${tenantCount} tenants`, rounds: [], run: (d) => callers(uniform, d, getEntry) };
  const zipfLoad: Load = { name: `Tenantry, Zipf(${zipfExponent}) over ${tenantCount} tenants`, rounds: [], run: (d) => callers(zipf, d, getEntry) };
  const hotLoad: Load = { name: `Tenantry, ${hotTenants} hot tenants`, rounds: [], run: (d) => callers(hot, d, getEntry) };
  const loads = [bareLoad, uniformLoad, zipfLoad, hotLoad];

  /** Samples the connections of the tenants' roles opened by Backend every 20 ms until stopped; the highest count. */
  const sampler = new pg.Client({ connectionString: database.url });
  await sampler.connect();
  const sampleConnections = () => {
    let peak = 0;
    let stopped = false;
    const done = (async () => {
      while (!stopped) {
        const { rows } = await sampler.query<{ n: number }>(
          "select count(*)::int as n from pg_stat_activity where usename like 'cold\\_%' and application_name is distinct from 'bench-bare'",
        );
        peak = Math.max(peak, rows[0]!.n);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      return peak;
    })();
    return async () => {
      stopped = true;
      return done;
    };
  };
  const measure = async (load: Load, duration: number): Promise<Round> => {
    const stopSampling = sampleConnections();
    const cpuUsed = await startCpuMeter(backend.pid!, database.pid);
    const started = performance.now();
    const result = await load.run(duration);
    const elapsed = (performance.now() - started) / 1000;
    return { ...result, seconds: elapsed, cpu: await cpuUsed(), peakConnections: await stopSampling() };
  };

  process.stdout.write(`warming up…\n`);
  for (const load of loads) {
    await measure(load, warmUpSeconds);
  }
  for (let round = 0; round < roundCount; round++) {
    process.stdout.write(`round ${round + 1}/${roundCount}…\n`);
    for (let i = 0; i < loads.length; i++) {
      const load = loads[(round + i) % loads.length]!;
      load.rounds.push(await measure(load, seconds / roundCount));
    }
  }
  client.close();
  await sampler.end();
  await admin.end();

  const sum = (rounds: Round[], f: (r: Round) => number) => rounds.reduce((n, r) => n + f(r), 0);
  const summary = (load: Load) => {
    const calls = sum(load.rounds, (r) => r.calls);
    const secs = sum(load.rounds, (r) => r.seconds);
    const latencies = load.rounds.flatMap((r) => r.latencies).sort((a, b) => a - b);
    const errors = new Map<string, number>();
    for (const r of load.rounds) {
      for (const [code, n] of r.errors) {
        errors.set(code, (errors.get(code) ?? 0) + n);
      }
    }
    return {
      rps: calls / secs,
      p50: quantile(latencies, 0.5),
      p99: quantile(latencies, 0.99),
      errors,
      errorCount: [...errors.values()].reduce((n, e) => n + e, 0),
      serverPerCall: (sum(load.rounds, (r) => r.cpu.server) * 1000) / calls,
      postgresPerCall: (sum(load.rounds, (r) => r.cpu.postgres) * 1000) / calls,
      clientPerCall: (sum(load.rounds, (r) => r.cpu.client) * 1000) / calls,
      others: sum(load.rounds, (r) => r.cpu.others) / secs,
      peak: Math.max(...load.rounds.map((r) => r.peakConnections)),
    };
  };
  const s = new Map(loads.map((l) => [l, summary(l)]));
  const rpsOf = (r: Round) => r.calls / r.seconds;
  const medianOf = (values: number[]) => {
    const sorted = [...values].sort((x, y) => x - y);
    const middle = Math.floor(sorted.length / 2);
    return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
  };
  const uniformRatios = uniformLoad.rounds.map((r, i) => rpsOf(r) / rpsOf(bareLoad.rounds[i]!));
  const zipfRatios = zipfLoad.rounds.map((r, i) => rpsOf(r) / rpsOf(hotLoad.rounds[i]!));
  const errorsOf = (e: Map<string, number>) => (e.size === 0 ? "0" : [...e].map(([code, n]) => `${code} ${n}`).join(", "));
  const backendErrors = [uniformLoad, zipfLoad, hotLoad].reduce((n, l) => n + s.get(l)!.errorCount, 0);
  const peak = Math.max(...[uniformLoad, zipfLoad, hotLoad].map((l) => s.get(l)!.peak));
  const others = [...s.values()].reduce((n, x) => n + x.others, 0) / s.size;
  process.stdout.write(`
${tenantCount} dedicated tenants (a database and a role each, scram-sha-256 with ${scramIterations} iterations) created in ${createSeconds.toFixed(1)} s, ${((createSeconds * 1000) / tenantCount).toFixed(1)} ms per tenant
one cold open, serially on an idle server, median of ${steps.connect.length}: connect and authenticate ${median(steps.connect).toFixed(2)} ms, first query ${median(steps.query).toFixed(2)} ms, close ${median(steps.end).toFixed(2)} ms

GetEntry: ${concurrency} callers, budget ${budget} connections, ${roundCount} interleaved rounds, ${seconds} s per load after ${warmUpSeconds} s of warm-up
${table(
  ["load", "req/s", "p50 ms", "p99 ms", "errors by code", "Backend CPU ms/call", "PostgreSQL CPU ms/call", "callers CPU ms/call", "tenants' connections, most seen"],
  loads.map((l) => {
    const x = s.get(l)!;
    return [l.name, x.rps.toFixed(0), x.p50.toFixed(2), x.p99.toFixed(2), errorsOf(x.errors), l === bareLoad ? "" : x.serverPerCall.toFixed(3), x.postgresPerCall.toFixed(3), x.clientPerCall.toFixed(3), l === bareLoad ? "" : String(x.peak)];
  }),
)}
other work on the machine during the rounds: ${others.toFixed(2)} of ${os.availableParallelism()} cores on average
round by round, uniform / bare: ${uniformRatios.map((r) => r.toFixed(2)).join(" ")}; Zipf / hot: ${zipfRatios.map((r) => r.toFixed(2)).join(" ")}

Goal: ${tenantCount} cold tenants within ${budget} connections
${goalTable([
  { measure: "errors (Backend, every load)", figure: backendErrors, shown: String(backendErrors), atMost: 0, goal: "0" },
  { measure: "tenants' connections at once, most seen", figure: peak, shown: String(peak), atMost: budget, goal: `≤ ${budget}` },
  { measure: "throughput, uniform / bare cold opens, median of the rounds", figure: medianOf(uniformRatios), shown: medianOf(uniformRatios).toFixed(3), atLeast: 0.8, goal: "≥ 0.80" },
  { measure: "throughput, uniform / bare cold opens, all rounds together", figure: s.get(uniformLoad)!.rps / s.get(bareLoad)!.rps, shown: (s.get(uniformLoad)!.rps / s.get(bareLoad)!.rps).toFixed(3), atLeast: 0.8, goal: "≥ 0.80" },
  { measure: `throughput, Zipf(${zipfExponent}) / ${hotTenants} hot tenants, median of the rounds`, figure: medianOf(zipfRatios), shown: medianOf(zipfRatios).toFixed(3), atLeast: 0.7, goal: "≥ 0.70" },
  { measure: `throughput, Zipf(${zipfExponent}) / ${hotTenants} hot tenants, all rounds together`, figure: s.get(zipfLoad)!.rps / s.get(hotLoad)!.rps, shown: (s.get(zipfLoad)!.rps / s.get(hotLoad)!.rps).toFixed(3), atLeast: 0.7, goal: "≥ 0.70" },
])}
`);
} finally {
  await bench.stop();
}
