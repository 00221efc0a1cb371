// npm run bench:telemetry: what tracing and metrics cost on Backend's GetEntry.
// The same Backend three times in one run: telemetry off (OTEL_SDK_DISABLED),
// on as by default (every call traced and measured, nothing exported), and
// exporting every span over OTLP/HTTP to a local sink; rounds interleaved.
// BENCH_SECONDS (default 12) per server, BENCH_CONCURRENCY (default 32),
// BENCH_TENANTS (default 20 dedicated tenants).
import { createClient } from "@connectrpc/connect";
import path from "node:path";
import { AuthService } from "../gen/tenantry/auth/v1/auth_service_pb.js";
import { EntryService } from "../gen/tenantry/backend/v1/entry_service_pb.js";
import { Placement, PlatformService } from "../gen/tenantry/platform/v1/platform_service_pb.js";
import { createGrpcJsTransport, operatorCredentialInterceptor } from "../services/mesh/index.ts";
import { freePort } from "../services/testing/free-port.ts";
import { root, startBenchMesh, startBenchProcesses } from "./bench-processes.ts";
import { driveGetEntry, memoryOf, summarize, type Round, type Target } from "./get-entry-load.ts";
import { goalTable } from "./report.ts";

const seconds = Number(process.env.BENCH_SECONDS ?? 12);
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 32);
const tenantCount = Number(process.env.BENCH_TENANTS ?? 20);
const roundCount = 4;

const bench = await startBenchProcesses({ ephemeral: true });
const mesh = await startBenchMesh(bench);
const tenantEnv = { ...bench.shared, TENANTRY_PLATFORM_ADDRESS: `127.0.0.1:${mesh.ports.platform}`, TENANTRY_AUTH_ADDRESS: `127.0.0.1:${mesh.ports.auth}` };
const sinkPort = await freePort();
await bench.start("otlp sink", path.join(root, "bench/otlp-sink.ts"), { SINK_PORT: String(sinkPort) });

async function startBackend(name: string, env: Record<string, string>) {
  const grpcPort = await freePort();
  const child = await bench.start(name, path.join(root, "services/backend/main.ts"), {
    ...tenantEnv,
    TENANTRY_GRPC_PORT: String(grpcPort),
    TENANTRY_HTTP_PORT: String(await freePort()),
    ...env,
  });
  return { name, address: `127.0.0.1:${grpcPort}`, pid: child.pid!, rounds: [] as Round[] };
}
const servers = [
  { ...(await startBackend("telemetry off", { OTEL_SDK_DISABLED: "true" })) },
  { ...(await startBackend("telemetry on, no exporter (default)", {})) },
  { ...(await startBackend("telemetry on, exporting over OTLP", { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${sinkPort}` })) },
];

process.stdout.write(`provisioning ${tenantCount} tenants…\n`);
const platform = createClient(PlatformService, createGrpcJsTransport({ address: `127.0.0.1:${mesh.ports.platform}`, interceptors: [operatorCredentialInterceptor(bench.operatorToken)] }));
const auth = createClient(AuthService, createGrpcJsTransport({ address: `127.0.0.1:${mesh.ports.auth}` }));
const entries = createClient(EntryService, createGrpcJsTransport({ address: `127.0.0.1:${mesh.ports.backend}` }));
const targets: Target[] = [];
for (let i = 0; i < tenantCount; i++) {
  const tenantId = `bench-${i}`;
  await platform.createTenant({ tenantId, placement: Placement.DEDICATED, ownerEmail: "owner@example.com", ownerPassword: "bench-password" });
  const { accessToken: token } = await auth.login({ email: "owner@example.com", password: "bench-password" }, { headers: { "x-tenant-id": tenantId } });
  const { entry } = await entries.createEntry({ title: `entry of ${tenantId}`, body: "x".repeat(200), tags: ["bench"] }, { headers: { "x-tenant-id": tenantId, authorization: `Bearer ${token}` } });
  targets.push({ tenantId, token, id: entry!.id });
}

process.stdout.write("warming up…\n");
for (const server of servers) {
  await driveGetEntry(server.address, { targets, concurrency, duration: 2, serverPid: server.pid, postmasterPid: bench.database.pid });
}
for (let round = 0; round < roundCount; round++) {
  process.stdout.write(`round ${round + 1}/${roundCount}…\n`);
  // A different server first in each round, so that drift in the machine's load spreads over all three.
  for (let i = 0; i < servers.length; i++) {
    const server = servers[(round + i) % servers.length]!;
    server.rounds.push(await driveGetEntry(server.address, { targets, concurrency, duration: seconds / roundCount, serverPid: server.pid, postmasterPid: bench.database.pid }));
  }
}

const results = await Promise.all(servers.map(async (s) => ({ name: s.name, ...summarize(s.rounds), memory: await memoryOf(s.pid) })));
const [off, on, exporting] = results as [(typeof results)[0], (typeof results)[0], (typeof results)[0]];
const row = (r: (typeof results)[0]) =>
  `| ${r.name.padEnd(36)} | ${r.rps.toFixed(0).padStart(6)} | ${r.p50.toFixed(2).padStart(6)} | ${r.p99.toFixed(2).padStart(6)} | ${String(r.errors).padStart(6)} | ${r.cpuPerCall.toFixed(3).padStart(11)} | ${r.memory.rss.toFixed(0).padStart(4)} / ${r.memory.peak.toFixed(0).padStart(4)} |`;
const cost = (r: (typeof results)[0]) => (1 - r.rps / off.rps) * 100;
process.stdout.write(`
Backend GetEntry over gRPC, ${concurrency} callers, ${seconds} s per server in ${roundCount} interleaved rounds, ${targets.length} tenants
| server                               |  req/s | p50 ms | p99 ms | errors | CPU ms/call | RSS / peak MB |
|--------------------------------------|--------|--------|--------|--------|-------------|---------------|
${results.map(row).join("\n")}

telemetry on, no exporter: ${(on.cpuPerCall - off.cpuPerCall).toFixed(3)} ms CPU per call more than off; exporting: ${(exporting.cpuPerCall - off.cpuPerCall).toFixed(3)} ms

Goal: what telemetry costs
${goalTable([
  { measure: "throughput lost, telemetry on without an exporter, %", figure: cost(on), shown: cost(on).toFixed(1), atMost: 5, goal: "≤ 5" },
  { measure: "throughput lost, exporting every span over OTLP, %", figure: cost(exporting), shown: cost(exporting).toFixed(1), atMost: 15, goal: "≤ 15" },
])}
`);
await bench.stop();
process.exit(0);
