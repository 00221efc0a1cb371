// npm run bench: Backend GetEntry over gRPC spread over 100 tenants, against
// a bare grpc-js + pg baseline on one database, measured in the same run.
// BENCH_SECONDS (default 8) per round, BENCH_CONCURRENCY (default 32),
// BENCH_TENANTS (default 100), BENCH_PROFILE=1 to profile Backend's CPU.
import { createClient } from "@connectrpc/connect";
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import pg from "pg";
import { AuthService } from "../gen/tenantry/auth/v1/auth_service_pb.js";
import { EntryService } from "../gen/tenantry/backend/v1/entry_service_pb.js";
import { PlatformService } from "../gen/tenantry/platform/v1/platform_service_pb.js";
import { createGrpcJsTransport, operatorCredentialInterceptor } from "../services/mesh/index.ts";
import { root, startBenchProcesses } from "./bench-processes.ts";
import { driveGetEntry, memoryOf, summarize, type Round } from "./get-entry-load.ts";
import { freePort } from "../services/testing/free-port.ts";

const seconds = Number(process.env.BENCH_SECONDS ?? 8);
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 32);
const tenantCount = Number(process.env.BENCH_TENANTS ?? 100);
const profile = process.env.BENCH_PROFILE === "1";
const poolMax = 20;

const bench = await startBenchProcesses({ ephemeral: true });
const { dir, database, operatorToken, shared } = bench;
const startProcess = bench.start;

const ports = {
  platform: await freePort(),
  auth: await freePort(),
  backend: await freePort(),
  tightBackend: await freePort(),
  unverifiedBackend: await freePort(),
  baseline: await freePort(),
};
const common = { ...shared, TENANTRY_PLATFORM_ADDRESS: `127.0.0.1:${ports.platform}`, TENANTRY_AUTH_ADDRESS: `127.0.0.1:${ports.auth}` };
await startProcess("platform", path.join(root, "services/platform/main.ts"), {
  ...shared,
  TENANTRY_GRPC_PORT: String(ports.platform),
  TENANTRY_HTTP_PORT: String(await freePort()),
  TENANTRY_DATABASE_URL: database.urlFor("tenantry_platform"),
  TENANTRY_SCHEMA_SERVICES: `auth=127.0.0.1:${ports.auth},backend=127.0.0.1:${ports.backend}`,
});
await startProcess("auth", path.join(root, "services/auth/main.ts"), { ...common, TENANTRY_GRPC_PORT: String(ports.auth), TENANTRY_HTTP_PORT: String(await freePort()) });
const profileDir = path.join(dir, "profile");
// Backend with a connection ceiling that fits the working set (one or more per tenant)…
const backend = await startProcess(
  "backend",
  path.join(root, "services/backend/main.ts"),
  { ...common, TENANTRY_GRPC_PORT: String(ports.backend), TENANTRY_HTTP_PORT: String(await freePort()), TENANTRY_DB_MAX_CONNECTIONS: String(tenantCount + 28) },
  profile ? ["--cpu-prof", `--cpu-prof-dir=${profileDir}`] : [],
);
// …and one held to the baseline's pool size, so that most calls find their tenant without a connection.
const tightBackend = await startProcess("backend (tight)", path.join(root, "services/backend/main.ts"), {
  ...common,
  TENANTRY_GRPC_PORT: String(ports.tightBackend),
  TENANTRY_HTTP_PORT: String(await freePort()),
  TENANTRY_DB_MAX_CONNECTIONS: String(poolMax),
});

// …and one that decodes access tokens without verifying them: what verification costs.
const unverifiedBackend = await startProcess("backend (tokens not verified)", path.join(root, "bench/backend-unverified.ts"), {
  ...common,
  TENANTRY_GRPC_PORT: String(ports.unverifiedBackend),
  TENANTRY_HTTP_PORT: String(await freePort()),
  TENANTRY_DB_MAX_CONNECTIONS: String(tenantCount + 28),
});

process.stdout.write(`provisioning ${tenantCount} tenants…\n`);
const platform = createClient(
  PlatformService,
  createGrpcJsTransport({ address: `127.0.0.1:${ports.platform}`, interceptors: [operatorCredentialInterceptor(operatorToken)] }),
);
const entries = createClient(EntryService, createGrpcJsTransport({ address: `127.0.0.1:${ports.backend}` }));
const auth = createClient(AuthService, createGrpcJsTransport({ address: `127.0.0.1:${ports.auth}` }));
const targets: { tenantId: string; token: string; id: string; title: string; body: string; tags: string[] }[] = [];
for (let i = 0; i < tenantCount; i += 4) {
  await Promise.all(
    Array.from({ length: Math.min(4, tenantCount - i) }, async (_, j) => {
      const tenantId = `bench-${i + j}`;
      await platform.createTenant({ tenantId, ownerEmail: "owner@example.com", ownerPassword: "bench-password" });
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
await baselineDb.query(`create table backend.entries (id uuid primary key, title varchar(200) not null, body text not null default '', tags text[] not null default '{}', version integer not null default 1, created_at timestamptz(3) not null default now(), updated_at timestamptz(3) not null default now())`);
for (const t of targets) {
  await baselineDb.query("insert into backend.entries (id, title, body, tags) values ($1, $2, $3, $4)", [t.id, t.title, t.body, t.tags]);
}
await baselineDb.end();
const baseline = await startProcess("baseline", path.join(root, "bench/baseline-server.ts"), {
  BASELINE_PORT: String(ports.baseline),
  BASELINE_DATABASE_URL: database.urlFor("bench_baseline"),
  BASELINE_POOL_MAX: String(poolMax),
});

const drive = (address: string, duration: number, serverPid: number) => driveGetEntry(address, { targets, concurrency, duration, serverPid });
const summary = summarize;
const rssOf = memoryOf;

const baselineAddress = `127.0.0.1:${ports.baseline}`;
const backendAddress = `127.0.0.1:${ports.backend}`;
process.stdout.write(`warming up…\n`);
await drive(baselineAddress, 2, baseline.pid!);
await drive(backendAddress, 2, backend.pid!);
const tightAddress = `127.0.0.1:${ports.tightBackend}`;
await drive(tightAddress, 2, tightBackend.pid!);
const unverifiedAddress = `127.0.0.1:${ports.unverifiedBackend}`;
await drive(unverifiedAddress, 2, unverifiedBackend.pid!);
const rounds = { baseline: [] as Round[], tenantry: [] as Round[], tight: [] as Round[], unverified: [] as Round[] };
/** Monotonic-clock windows (µs) of the measured Tenantry rounds, to cut the profile to them. */
const windows: [number, number][] = [];
const nowUs = () => Number(process.hrtime.bigint() / 1000n);
for (let round = 0; round < 2; round++) {
  process.stdout.write(`round ${round + 1}/2…\n`);
  rounds.baseline.push(await drive(baselineAddress, seconds / 2, baseline.pid!));
  const start = nowUs();
  rounds.tenantry.push(await drive(backendAddress, seconds / 2, backend.pid!));
  windows.push([start, nowUs()]);
  rounds.tight.push(await drive(tightAddress, seconds / 2, tightBackend.pid!));
  rounds.unverified.push(await drive(unverifiedAddress, seconds / 2, unverifiedBackend.pid!));
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
process.stdout.write("logins…\n");
const login = await logins(seconds / 2);
const b = summary(rounds.baseline);
const t = summary(rounds.tenantry);
const tight = summary(rounds.tight);
const unverified = summary(rounds.unverified);
const unverifiedMemory = await rssOf(unverifiedBackend.pid!);
const backendMemory = await rssOf(backend.pid!);
const tightMemory = await rssOf(tightBackend.pid!);
const baselineMemory = await rssOf(baseline.pid!);

const row = (name: string, s: ReturnType<typeof summary>, mem: { rss: number; peak: number }) =>
  `| ${name.padEnd(36)} | ${s.rps.toFixed(0).padStart(8)} | ${s.p50.toFixed(2).padStart(7)} | ${s.p99.toFixed(2).padStart(7)} | ${String(s.errors).padStart(6)} | ${s.cpuPerCall.toFixed(3).padStart(11)} | ${mem.rss.toFixed(0).padStart(5)} / ${mem.peak.toFixed(0).padStart(4)} |`;
process.stdout.write(`
GetEntry over gRPC, ${concurrency} concurrent callers, ${seconds} s each, ${targets.length} tenants (baseline: one database)
| server                               |    req/s | p50 ms  | p99 ms  | errors | CPU ms/call | RSS / peak MB |
|--------------------------------------|----------|---------|---------|--------|-------------|---------------|
${row("baseline: bare grpc-js + one pg Pool", b, baselineMemory)}
${row(`tenantry, ceiling ${tenantCount + 28} connections`, t, backendMemory)}
${row(`tenantry, ceiling ${poolMax} connections`, tight, tightMemory)}
${row(`tenantry, tokens not verified`, unverified, unverifiedMemory)}

throughput ratio, tenantry / baseline: ${(t.rps / b.rps).toFixed(2)} with a ceiling that fits ${targets.length} tenants, ${(tight.rps / b.rps).toFixed(2)} with ${poolMax} connections for ${targets.length} tenants   (goal: at least 0.80)
access token verification: ${((1 - t.rps / unverified.rps) * 100).toFixed(1)}% of throughput (verified ${t.rps.toFixed(0)} vs unverified ${unverified.rps.toFixed(0)} req/s)   (goal: at most 10%)
Login (Argon2id, ${concurrency} callers over ${targets.length} tenants): ${login.perSecond.toFixed(1)} logins/s, ${login.errors} errors
`);

// Node writes the CPU profile when Backend exits.
await bench.stopProcesses();
if (profile) {
  const [file] = await readdir(profileDir);
  const cpu = JSON.parse(await readFile(path.join(profileDir, file!), "utf8")) as {
    nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[];
    samples: number[];
    timeDeltas: number[];
    startTime: number;
  };
  // Only the samples taken while Tenantry was being measured.
  const hits = new Map<number, number>();
  let at = cpu.startTime;
  let total = 0;
  cpu.samples.forEach((id, i) => {
    at += cpu.timeDeltas[i]!;
    if (windows.some(([from, to]) => at >= from && at <= to)) {
      hits.set(id, (hits.get(id) ?? 0) + 1);
      total++;
    }
  });
  const byPackage = new Map<string, number>();
  const byFunction = new Map<string, number>();
  for (const node of cpu.nodes) {
    const count = hits.get(node.id) ?? 0;
    if (count === 0) {
      continue;
    }
    const url = node.callFrame.url;
    const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)?.[1] ?? (url.startsWith("node:") || url === "" ? `(node ${node.callFrame.functionName || "internals"})` : url.includes("/services/") ? "tenantry services" : url.includes("/gen/") ? "tenantry gen" : url);
    byPackage.set(pkg, (byPackage.get(pkg) ?? 0) + count);
    const fn = `${node.callFrame.functionName || "(anonymous)"} ${url.replace(/.*node_modules\//, "").replace(root, "")}:${node.callFrame.lineNumber + 1}`;
    byFunction.set(fn, (byFunction.get(fn) ?? 0) + count);
  }
  const top = (map: Map<string, number>, n: number) =>
    [...map].sort((x, y) => y[1] - x[1]).slice(0, n).map(([k, v]) => `  ${((100 * v) / total).toFixed(1).padStart(5)}%  ${k}`).join("\n");
  process.stdout.write(`\nBackend CPU profile while measured (${total} samples), self time by package:\n${top(byPackage, 15)}\n\nby function:\n${top(byFunction, 20)}\n`);
}
await bench.stop();
process.exit(0);
