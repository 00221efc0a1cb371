// npm run bench:provisioning: CreateTenant latency of dedicated tenants,
// every step recorded, in two settings of the same server, each round
// beside a bare
// `CREATE DATABASE … TEMPLATE` of the cluster's template (the floor, what
// a copy costs at that moment):
//   stock warm: TENANTRY_DATABASE_STOCK=BENCH_STOCK (default 3); before
//     each tenant the stock is full again, and how long its refill took is
//     measured; then a burst of tenants one after another, more than the
//     stock holds, without waiting for it;
//   stock off: TENANTRY_DATABASE_STOCK=0, every database a template copy
//     (what provisioning does with an empty stock).
// BENCH_PROVISION_COUNT (default 40) tenants in each setting;
// BENCH_EPHEMERAL=1 runs PostgreSQL without fsync (what the tests use).
import { createClient } from "@connectrpc/connect";
import pg from "pg";
import { setTimeout as sleep } from "node:timers/promises";
import { Placement, PlatformService } from "../gen/tenantry/platform/v1/platform_service_pb.js";
import { createGrpcJsTransport, operatorCredentialInterceptor } from "../services/mesh/index.ts";
import { quantile, startBenchMesh, startBenchProcesses, type BenchProcesses } from "./bench-processes.ts";
import { goalTable, table } from "./report.ts";

const count = Number(process.env.BENCH_PROVISION_COUNT ?? 40);
const stockSize = Number(process.env.BENCH_STOCK ?? 3);
const burst = 4 * stockSize;
const ephemeral = process.env.BENCH_EPHEMERAL === "1";
const template = "tenantry_platform_template";
const stockPrefix = "tenantry_platform_stock_";

/** Starts the mesh with a stock of `size`; a CreateTenant client and a closer. */
async function startMesh(bench: BenchProcesses, size: number) {
  const { ports } = await startBenchMesh(bench, { platformEnv: { TENANTRY_DATABASE_STOCK: String(size) } });
  const transport = createGrpcJsTransport({ address: `127.0.0.1:${ports.platform}`, interceptors: [operatorCredentialInterceptor(bench.operatorToken)] });
  return { platform: createClient(PlatformService, transport), close: () => transport.close() };
}

const bench = await startBenchProcesses({ ephemeral });
try {
  const admin = new pg.Client({ connectionString: bench.database.url });
  await admin.connect();
  /** The stock's databases on the server, by oid (any being built counts with them: its name ends with _b). */
  const stock = async () => new Set((await admin.query<{ oid: number }>("select oid from pg_database where starts_with(datname, $1)", [stockPrefix])).rows.map((r) => r.oid));
  const ready = async () =>
    new Set((await admin.query<{ oid: number }>("select oid from pg_database where starts_with(datname, $1) and datname !~ '_b$' and not datallowconn", [stockPrefix])).rows.map((r) => r.oid));
  const databaseOid = async (tenantId: string) =>
    (await admin.query<{ oid: number }>("select oid from pg_database where datname = $1", [`tenant_${tenantId.replaceAll("-", "_")}`])).rows[0]!.oid;
  /** Waits until the server holds `size` ready stock databases and none being built; how long it took, ms. */
  const stockOf = async (size: number) => {
    const t0 = performance.now();
    while ((await stock()).size !== size || (await ready()).size !== size) {
      await sleep(5);
    }
    return performance.now() - t0;
  };
  let bare = 0;
  /** The floor: a bare copy of the template (dropped with the others once a setting is measured, so that no drop's I/O falls into a round). */
  const floorCopy = async () => {
    const t0 = performance.now();
    await admin.query(`create database bare_${bare++} template ${template}`);
    return performance.now() - t0;
  };
  const dropFloorCopies = async () => {
    for (let i = 0; i < bare; i++) {
      await admin.query(`drop database if exists bare_${i}`);
    }
  };
  const timed = async (work: () => Promise<unknown>) => {
    const t0 = performance.now();
    await work();
    return performance.now() - t0;
  };

  // Stock warm.
  let mesh = await startMesh(bench, stockSize);
  const firstFill = await stockOf(stockSize);
  await mesh.platform.createTenant({ tenantId: "warm-up", placement: Placement.DEDICATED });
  const warm: number[] = [];
  const warmFloor: number[] = [];
  const refills: number[] = [];
  let taken = 0;
  for (let i = 0; i < count; i++) {
    await stockOf(stockSize);
    const before = await ready();
    warm.push(await timed(() => mesh.platform.createTenant({ tenantId: `stock-${i}`, placement: Placement.DEDICATED })));
    taken += before.has(await databaseOid(`stock-${i}`)) ? 1 : 0;
    refills.push(await stockOf(stockSize));
    warmFloor.push(await floorCopy());
  }
  const burstTimes: number[] = [];
  for (let i = 0; i < burst; i++) {
    burstTimes.push(await timed(() => mesh.platform.createTenant({ tenantId: `burst-${i}`, placement: Placement.DEDICATED })));
  }
  const burstRefill = await stockOf(stockSize);
  await dropFloorCopies();
  mesh.close();
  await bench.stopProcesses();

  // Stock off: every database a copy of the template.
  mesh = await startMesh(bench, 0);
  await stockOf(0);
  const copied: number[] = [];
  const copiedFloor: number[] = [];
  for (let i = 0; i < count; i++) {
    copiedFloor.push(await floorCopy());
    copied.push(await timed(() => mesh.platform.createTenant({ tenantId: `copy-${i}`, placement: Placement.DEDICATED })));
  }
  await dropFloorCopies();
  mesh.close();
  await admin.end();

  for (const values of [warm, warmFloor, refills, burstTimes, copied, copiedFloor]) {
    values.sort((a, b) => a - b);
  }
  const p50 = (values: number[]) => quantile(values, 0.5);
  const p99 = (values: number[]) => quantile(values, 0.99);
  const ms = (value: number) => value.toFixed(1);
  const storage = ephemeral ? "PostgreSQL without fsync" : "durable PostgreSQL";
  process.stdout.write(`
Provisioning, ${count} tenants one after another in each setting (${storage} on this machine)
${table(
  ["what", "p50 ms", "p99 ms"],
  [
    [`CreateTenant, stock of ${stockSize} warm (${taken} of ${count} took a stock database)`, ms(p50(warm)), ms(p99(warm))],
    ["  bare CREATE DATABASE … TEMPLATE beside it (floor)", ms(p50(warmFloor)), ms(p99(warmFloor))],
    ["  stock full again after CreateTenant answered", ms(p50(refills)), ms(p99(refills))],
    [`CreateTenant, ${burst} back to back, stock of ${stockSize} not waited for`, ms(p50(burstTimes)), ms(p99(burstTimes))],
    ["CreateTenant, stock off (template copy, the empty stock's path)", ms(p50(copied)), ms(p99(copied))],
    ["  bare CREATE DATABASE … TEMPLATE beside it (floor)", ms(p50(copiedFloor)), ms(p99(copiedFloor))],
  ],
)}
Stock of ${stockSize} built at start (template included): ${ms(firstFill)} ms; full again after the burst in ${ms(burstRefill)} ms.

Goal: provisioning
${goalTable([
  {
    measure: `CreateTenant p50, stock warm, ms (${ephemeral ? "without fsync: the goal is for durable storage" : "durable storage"})`,
    figure: p50(warm),
    shown: ms(p50(warm)),
    atMost: 100,
    goal: "≤ 100",
  },
  { measure: "tenants that took a stock database, stock warm", figure: taken / count, shown: `${taken}/${count}`, atLeast: 1, goal: `${count}/${count}` },
  { measure: "CreateTenant / the floor, p50, stock off", figure: p50(copied) / p50(copiedFloor), shown: (p50(copied) / p50(copiedFloor)).toFixed(2), atMost: 2, goal: "≤ 2" },
  { measure: "CreateTenant / the floor, p99, stock off", figure: p99(copied) / p99(copiedFloor), shown: (p99(copied) / p99(copiedFloor)).toFixed(2), atMost: 2, goal: "≤ 2" },
])}
`);
} finally {
  await bench.stop();
}
