// npm run bench:provisioning: CreateTenant latency (template fast path,
// every step recorded, role, revoke, ownership, version check) against a
// bare `CREATE DATABASE … TEMPLATE` of the same template on the same
// server, alternating so both see the same conditions.
// BENCH_PROVISION_COUNT (default 40) of each; BENCH_EPHEMERAL=1 runs
// PostgreSQL without fsync (what the tests use).
import { createClient } from "@connectrpc/connect";
import pg from "pg";
import { PlatformService } from "../gen/tenantry/platform/v1/platform_service_pb.js";
import { createGrpcJsTransport, operatorCredentialInterceptor } from "../services/mesh/index.ts";
import { quantile, startBenchMesh, startBenchProcesses } from "./bench-processes.ts";
import { goalTable } from "./report.ts";

const count = Number(process.env.BENCH_PROVISION_COUNT ?? 40);
const ephemeral = process.env.BENCH_EPHEMERAL === "1";
const bench = await startBenchProcesses({ ephemeral });
try {
  const { ports } = await startBenchMesh(bench);
  const transport = createGrpcJsTransport({ address: `127.0.0.1:${ports.platform}`, interceptors: [operatorCredentialInterceptor(bench.operatorToken)] });
  const platform = createClient(PlatformService, transport);
  // The first tenant builds the cluster's template.
  await platform.createTenant({ tenantId: "warm-up" });
  const admin = new pg.Client({ connectionString: bench.database.url });
  await admin.connect();
  const template = "tenantry_platform_template";

  const provisioning: number[] = [];
  const floor: number[] = [];
  for (let i = 0; i < count; i++) {
    let t0 = performance.now();
    await admin.query(`create database bare_${i} template ${template}`);
    floor.push(performance.now() - t0);
    t0 = performance.now();
    await platform.createTenant({ tenantId: `bench-${i}` });
    provisioning.push(performance.now() - t0);
  }
  for (let i = 0; i < count; i++) {
    await admin.query(`drop database bare_${i}`);
  }
  await admin.end();
  transport.close();

  provisioning.sort((a, b) => a - b);
  floor.sort((a, b) => a - b);
  const row = (name: string, values: number[]) => `| ${name.padEnd(44)} | ${quantile(values, 0.5).toFixed(1).padStart(7)} | ${quantile(values, 0.99).toFixed(1).padStart(7)} |`;
  process.stdout.write(`
Provisioning, ${count} tenants one after another (${ephemeral ? "PostgreSQL without fsync" : "durable PostgreSQL"} on this machine)
| what                                         | p50 ms  | p99 ms  |
|----------------------------------------------|---------|---------|
${row("bare CREATE DATABASE … TEMPLATE (floor)", floor)}
${row("CreateTenant (template copy, every step)", provisioning)}

Goal: provisioning
${goalTable([
  {
    measure: `CreateTenant p50, ms (${ephemeral ? "without fsync: the goal is for durable storage" : "durable storage"})`,
    figure: quantile(provisioning, 0.5),
    shown: quantile(provisioning, 0.5).toFixed(1),
    atMost: 100,
    goal: "≤ 100",
  },
  { measure: "CreateTenant / the floor, p50", figure: quantile(provisioning, 0.5) / quantile(floor, 0.5), shown: (quantile(provisioning, 0.5) / quantile(floor, 0.5)).toFixed(2), atMost: 2, goal: "≤ 2" },
  { measure: "CreateTenant / the floor, p99", figure: quantile(provisioning, 0.99) / quantile(floor, 0.99), shown: (quantile(provisioning, 0.99) / quantile(floor, 0.99)).toFixed(2), atMost: 2, goal: "≤ 2" },
])}
`);
} finally {
  await bench.stop();
}
