// npm run bench:get-entry: Backend's GetEntry over gRPC, spread over 100
// dedicated tenants, against a bare grpc-js + pg baseline on one database, in one run:
// rounds interleaved (the order turning each round), warm-up excluded, and
// the baseline measured twice per round, so that the two series show the
// machine's own noise. Tokens are verified and telemetry is on (defaults).
//   --profile   profile Backend's CPU and name the packages it went to
//   --variants  also Backend held to 20 connections, Backend not verifying
//               tokens, and Login throughput
//   --compare DIR  also the Backend of another checkout (with its
//               node_modules), such as main's: a change's before and after
//               in the same run
// BENCH_SECONDS (default 12) measured per server, BENCH_ROUNDS (default 6),
// BENCH_WARMUP_SECONDS (default 3), BENCH_CONCURRENCY (default 32),
// BENCH_TENANTS (default 100).
import { createClient } from "@connectrpc/connect";
import { copyFile, readdir, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import pg from "pg";
import { AuthService } from "../gen/tenantry/auth/v1/auth_service_pb.js";
import { EntryService } from "../gen/tenantry/backend/v1/entry_service_pb.js";
import { Placement, PlatformService } from "../gen/tenantry/platform/v1/platform_service_pb.js";
import { createGrpcJsTransport, operatorCredentialInterceptor } from "../services/mesh/index.ts";
import { freePort } from "../services/testing/free-port.ts";
import { root, startBenchProcesses } from "./bench-processes.ts";
import { nowUs, summarizeProfile, type Window } from "./cpu-profile.ts";
import { driveGetEntry, memoryOf, summarize, type Round, type Summary, type Target } from "./get-entry-load.ts";
import { goalTable, table } from "./report.ts";

const { values: flags } = parseArgs({
  options: { profile: { type: "boolean", default: false }, variants: { type: "boolean", default: false }, compare: { type: "string" } },
});
const seconds = Number(process.env.BENCH_SECONDS ?? 12);
const roundCount = Number(process.env.BENCH_ROUNDS ?? 6);
const warmUpSeconds = Number(process.env.BENCH_WARMUP_SECONDS ?? 3);
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 32);
const tenantCount = Number(process.env.BENCH_TENANTS ?? 100);
const poolMax = 20;

const bench = await startBenchProcesses({ ephemeral: true });
const { dir, database, operatorToken, shared } = bench;

const ports = { platform: await freePort(), auth: await freePort(), backend: await freePort(), baseline: await freePort() };
const common = { ...shared, TENANTRY_PLATFORM_ADDRESS: `127.0.0.1:${ports.platform}`, TENANTRY_AUTH_ADDRESS: `127.0.0.1:${ports.auth}` };
// A server waits while the others are measured: its connections outlive those waits (here and in the
// baseline's pool), so that each round measures the steady state. Cold tenants are another benchmark's.
const idleTimeoutMs = 120_000;
await bench.start("platform", path.join(root, "services/platform/main.ts"), {
  ...shared,
  TENANTRY_GRPC_PORT: String(ports.platform),
  TENANTRY_HTTP_PORT: String(await freePort()),
  TENANTRY_DATABASE_URL: database.urlFor("tenantry_platform"),
  TENANTRY_SCHEMA_SERVICES: `auth=127.0.0.1:${ports.auth},backend=127.0.0.1:${ports.backend}`,
});
await bench.start("auth", path.join(root, "services/auth/main.ts"), { ...common, TENANTRY_GRPC_PORT: String(ports.auth), TENANTRY_HTTP_PORT: String(await freePort()) });

/** A server measured in the rounds. */
interface Server {
  name: string;
  address: string;
  pid: number;
  rounds: Round[];
  /** The monotonic-clock windows of its rounds, to cut a profile to them. */
  windows: Window[];
  /** A Tenantry server's HTTP port, where its metrics are. */
  httpPort?: number;
  /** Database connections it opened during its rounds. */
  opened: number;
}
const server = (name: string, port: number, pid: number, httpPort?: number): Server => ({
  name,
  address: `127.0.0.1:${port}`,
  pid,
  rounds: [],
  windows: [],
  opened: 0,
  ...(httpPort !== undefined && { httpPort }),
});

/** The database connections a Tenantry server has opened since it started, from its metrics. */
async function connectionsOpened(s: Server): Promise<number> {
  if (s.httpPort === undefined) {
    return 0;
  }
  const text = await (await fetch(`http://127.0.0.1:${s.httpPort}/metrics`)).text();
  return Number(/^tenantry_db_connections_opened_total\{[^}]*\} (\d+)/m.exec(text)?.[1] ?? 0);
}

const profileDir = path.join(dir, "profile");
/** Starts a Backend (by default as `npm start` runs it) on a port of its own. */
async function startBackend(name: string, env: Record<string, string>, options: { port?: number; file?: string; args?: string[] } = {}): Promise<Server> {
  const port = options.port ?? (await freePort());
  const httpPort = await freePort();
  const child = await bench.start(
    name,
    path.resolve(root, options.file ?? "services/backend/main.ts"),
    { ...common, TENANTRY_GRPC_PORT: String(port), TENANTRY_HTTP_PORT: String(httpPort), TENANTRY_DB_IDLE_TIMEOUT_MS: String(idleTimeoutMs), ...env },
    options.args,
  );
  return server(name, port, child.pid!, httpPort);
}
// The connection ceiling fits the working set: one connection or more per tenant.
const tenantry = await startBackend(`tenantry, ceiling ${tenantCount + 28} connections`, { TENANTRY_DB_MAX_CONNECTIONS: String(tenantCount + 28) }, {
  port: ports.backend,
  args: flags.profile ? ["--cpu-prof", `--cpu-prof-dir=${profileDir}`] : [],
});
const variants: Server[] = flags.variants
  ? [
      // Held to the baseline's pool size: most calls find their tenant without a connection.
      await startBackend(`tenantry, ceiling ${poolMax} connections`, { TENANTRY_DB_MAX_CONNECTIONS: String(poolMax) }),
      // Decoding access tokens without verifying them: what verification costs.
      await startBackend("tenantry, tokens not verified", { TENANTRY_DB_MAX_CONNECTIONS: String(tenantCount + 28) }, { file: "bench/backend-unverified.ts" }),
    ]
  : [];
if (flags.compare !== undefined) {
  const file = path.resolve(flags.compare, "services/backend/main.ts");
  variants.unshift(await startBackend(`tenantry of ${flags.compare}`, { TENANTRY_DB_MAX_CONNECTIONS: String(tenantCount + 28) }, { file }));
}

process.stdout.write(`provisioning ${tenantCount} tenants…\n`);
const platform = createClient(
  PlatformService,
  createGrpcJsTransport({ address: `127.0.0.1:${ports.platform}`, interceptors: [operatorCredentialInterceptor(operatorToken)] }),
);
const entries = createClient(EntryService, createGrpcJsTransport({ address: tenantry.address }));
const auth = createClient(AuthService, createGrpcJsTransport({ address: `127.0.0.1:${ports.auth}` }));
const targets: (Target & { title: string; body: string; tags: string[] })[] = [];
for (let i = 0; i < tenantCount; i += 4) {
  await Promise.all(
    Array.from({ length: Math.min(4, tenantCount - i) }, async (_, j) => {
      const tenantId = `bench-${i + j}`;
      await platform.createTenant({ tenantId, placement: Placement.DEDICATED, ownerEmail: "owner@example.com", ownerPassword: "bench-password" });
      const { accessToken: token } = await auth.login({ email: "owner@example.com", password: "bench-password" }, { headers: { "x-tenant-id": tenantId } });
      const headers = { "x-tenant-id": tenantId, authorization: `Bearer ${token}` };
      const { entry } = await entries.createEntry({ title: `entry of ${tenantId}`, body: "x".repeat(200), tags: ["bench", "entry"] }, { headers });
      targets.push({ tenantId, token, id: entry!.id, title: entry!.title, body: entry!.body, tags: entry!.tags });
    }),
  );
}

// The baseline's one database holds the same rows.
const admin = new pg.Client({ connectionString: database.url });
await admin.connect();
await admin.query("create database bench_baseline");
await admin.end();
const baselineDb = new pg.Client({ connectionString: database.urlFor("bench_baseline") });
await baselineDb.connect();
await baselineDb.query(`create schema backend`);
await baselineDb.query(
  `create table backend.entries (id uuid primary key, title varchar(200) not null, body text not null default '', tags text[] not null default '{}', version integer not null default 1, created_at timestamptz(3) not null default now(), updated_at timestamptz(3) not null default now())`,
);
for (const t of targets) {
  await baselineDb.query("insert into backend.entries (id, title, body, tags) values ($1, $2, $3, $4)", [t.id, t.title, t.body, t.tags]);
}
await baselineDb.end();
const baselineProcess = await bench.start("baseline", path.join(root, "bench/baseline-server.ts"), {
  BASELINE_PORT: String(ports.baseline),
  BASELINE_DATABASE_URL: database.urlFor("bench_baseline"),
  BASELINE_POOL_MAX: String(poolMax),
  BASELINE_IDLE_TIMEOUT_MS: String(idleTimeoutMs),
});
// One baseline server, measured twice in each round: how far its two series lie apart is the machine's noise.
const baselineA = server("baseline: bare grpc-js + one pg Pool (A)", ports.baseline, baselineProcess.pid!);
const baselineB = server("baseline, again (B)", ports.baseline, baselineProcess.pid!);

const drive = (s: Server, duration: number) => driveGetEntry(s.address, { targets, concurrency, duration, serverPid: s.pid, postmasterPid: database.pid });
const measured = [baselineA, tenantry, baselineB, ...variants];
process.stdout.write(`warming up…\n`);
for (const s of [baselineA, tenantry, ...variants]) {
  await drive(s, warmUpSeconds);
}
for (let round = 0; round < roundCount; round++) {
  process.stdout.write(`round ${round + 1}/${roundCount}…\n`);
  // Another server first in each round, so that drift in the machine's load spreads over all of them.
  for (let i = 0; i < measured.length; i++) {
    const s = measured[(round + i) % measured.length]!;
    const opened = await connectionsOpened(s);
    const from = nowUs();
    s.rounds.push(await drive(s, seconds / roundCount));
    s.windows.push([from, nowUs()]);
    s.opened += (await connectionsOpened(s)) - opened;
  }
}

/** Login throughput: `concurrency` callers logging in as the tenants' owners for `duration` s. */
async function logins(duration: number): Promise<{ perSecond: number; errors: number }> {
  let done = 0;
  let errors = 0;
  const stopAt = performance.now() + duration * 1000;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async (_, worker) => {
      for (let i = worker; performance.now() < stopAt; i += concurrency) {
        const tenantId = targets[i % targets.length]!.tenantId;
        await auth.login({ email: "owner@example.com", password: "bench-password" }, { headers: { "x-tenant-id": tenantId } }).then(
          () => done++,
          () => errors++,
        );
      }
    }),
  );
  return { perSecond: done / ((performance.now() - started) / 1000), errors };
}
const login = flags.variants ? await logins(4) : undefined;

const summaries = new Map<Server, Summary & { rssMb: number }>();
for (const s of measured) {
  summaries.set(s, { ...summarize(s.rounds), rssMb: (await memoryOf(s.pid)).rss });
}
const baseline = summarize([...baselineA.rounds, ...baselineB.rounds]);
const t = summaries.get(tenantry)!;
const a = summaries.get(baselineA)!;
const b = summaries.get(baselineB)!;
const apart = (x: number, y: number) => Math.abs(x - y) / ((x + y) / 2);
const ms = (n: number) => n.toFixed(2);
const othersCores = [...summaries.values()].reduce((n, s) => n + s.othersCores, 0) / summaries.size;
// Round by round, Tenantry against the baseline's two series of the same round, measured moments apart:
// slow drifts of the machine's load cancel out, and the median leaves out the rounds a burst of other work spoiled.
const rpsOf = (r: Round) => r.calls / r.seconds;
const rounds = tenantry.rounds.map((r, i) => {
  const [ra, rb] = [rpsOf(baselineA.rounds[i]!), rpsOf(baselineB.rounds[i]!)];
  return { ratio: rpsOf(r) / ((ra + rb) / 2), apart: apart(ra, rb), others: r.cpu.others / r.seconds };
});
const median = (values: number[]) => {
  const sorted = [...values].sort((x, y) => x - y);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
};
const roundRatio = median(rounds.map((r) => r.ratio));
const roundApart = median(rounds.map((r) => r.apart));
process.stdout.write(`
GetEntry over gRPC: ${concurrency} callers, ${targets.length} tenants (the baseline: one database), ${roundCount} interleaved rounds, ${seconds} s per server after ${warmUpSeconds} s of warm-up
${table(
  ["server", "req/s", "p50 ms", "p99 ms", "errors", "server CPU ms/call", "PostgreSQL ms/call", "callers ms/call", "server reads/writes per call", "connections opened", "RSS MB"],
  measured.map((s) => {
    const r = summaries.get(s)!;
    return [s.name, r.rps.toFixed(0), ms(r.p50), ms(r.p99), String(r.errors), r.cpuPerCall.toFixed(3), r.postgresPerCall.toFixed(3), r.clientPerCall.toFixed(3), `${r.readsPerCall.toFixed(2)} / ${r.writesPerCall.toFixed(2)}`, s.httpPort === undefined ? "" : String(s.opened), r.rssMb.toFixed(0)];
  }),
)}
other work on the machine during the rounds: ${othersCores.toFixed(2)} of ${os.availableParallelism()} cores on average
round by round, Tenantry / baseline: ${rounds.map((r) => r.ratio.toFixed(2)).join(" ")}   (other work, cores: ${rounds.map((r) => r.others.toFixed(1)).join(" ")})

Goal: GetEntry at the bare stack's speed, tokens verified and telemetry on (baseline: both series together)
${goalTable([
  { measure: "throughput, Tenantry / baseline, median of the rounds", figure: roundRatio, shown: roundRatio.toFixed(3), atLeast: 0.8, goal: "≥ 0.80" },
  { measure: "throughput, Tenantry / baseline, all rounds together", figure: t.rps / baseline.rps, shown: (t.rps / baseline.rps).toFixed(3), atLeast: 0.8, goal: "≥ 0.80" },
  { measure: "p99 latency, Tenantry / baseline", figure: t.p99 / baseline.p99, shown: (t.p99 / baseline.p99).toFixed(3), atMost: 2, goal: "≤ 2.00" },
  { measure: "errors", figure: t.errors, shown: String(t.errors), atMost: 0, goal: "0" },
  { measure: "database connections opened while measured", figure: tenantry.opened, shown: String(tenantry.opened), atMost: 0, goal: "0" },
  { measure: "machine noise: baseline A and B apart, req/s", figure: apart(a.rps, b.rps), shown: `${(100 * apart(a.rps, b.rps)).toFixed(1)}%`, atMost: 0.1, goal: "≤ 10%" },
  { measure: "machine noise: baseline A and B apart in a round, req/s, median", figure: roundApart, shown: `${(100 * roundApart).toFixed(1)}%`, atMost: 0.1, goal: "≤ 10%" },
  { measure: "machine noise: baseline A and B apart, p99", figure: apart(a.p99, b.p99), shown: `${(100 * apart(a.p99, b.p99)).toFixed(1)}%`, atMost: 0.1, goal: "≤ 10%" },
])}
`);
if (flags.compare !== undefined) {
  const other = summaries.get(variants[0]!)!;
  process.stdout.write(`
this checkout / ${flags.compare}: throughput ${(t.rps / other.rps).toFixed(2)}, p99 ${(t.p99 / other.p99).toFixed(2)}, server CPU per call ${(t.cpuPerCall / other.cpuPerCall).toFixed(2)}
`);
}
if (flags.variants) {
  const [tight, unverified] = variants.slice(flags.compare === undefined ? 0 : 1).map((s) => summaries.get(s)!) as unknown as [Summary, Summary];
  process.stdout.write(`
throughput with ${poolMax} connections for ${targets.length} tenants, Tenantry / baseline: ${(tight.rps / baseline.rps).toFixed(2)}
access token verification: ${((1 - t.rps / unverified.rps) * 100).toFixed(1)}% of throughput (verified ${t.rps.toFixed(0)} vs not verified ${unverified.rps.toFixed(0)} req/s)
Login (Argon2id, ${concurrency} callers over ${targets.length} tenants): ${login!.perSecond.toFixed(1)} logins/s, ${login!.errors} errors
`);
}

// Node writes the CPU profile when Backend exits.
await bench.stopProcesses();
if (flags.profile) {
  const [file] = await readdir(profileDir);
  const kept = path.join(os.tmpdir(), `tenantry-get-entry-${new Date().toISOString().replace(/[:.]/g, "-")}.cpuprofile`);
  await copyFile(path.join(profileDir, file!), kept);
  // The measured windows, for a closer look at the same samples.
  await writeFile(`${kept}.windows.json`, JSON.stringify(tenantry.windows));
  process.stdout.write(`
Backend's CPU profile while measured (${kept}, for Chrome DevTools or speedscope):
${await summarizeProfile(kept, tenantry.windows, root)}`);
}
await bench.stop();
process.exit(0);
