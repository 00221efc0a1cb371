// npm run bench:promotion: promotions of pooled tenants to databases of
// their own (MoveTenant, target_placement PLACEMENT_DEDICATED, online, on
// their own cluster) under a steady write load on the promoted tenant, with
// its pool neighbours reading and writing throughout: each promotion's
// total time, the write freeze (as Platform recorded it, as Backend held
// it from its logs, and as the writing clients saw it: the longest gap
// between acknowledged writes across the cutover), the longest write
// latency during the cutover, the p99 of write latency during the whole
// move, and the neighbours' calls that failed or were retried. Each
// promotion takes a new pooled tenant of one pool database, filled with
// BENCH_ENTRIES (default 20000) entries. BENCH_PROMOTIONS (default 3),
// BENCH_WRITE_RATE (default 50 writes/s, CreateEntry with a request id,
// retried on UNAVAILABLE), BENCH_WRITERS (default 4), BENCH_NEIGHBOURS
// (default 4 pooled tenants of the same pool database, each with one
// writer and one reader), BENCH_EPHEMERAL=1 runs PostgreSQL without fsync,
// BENCH_MOVE_MAX_RATE sets Platform's TENANTRY_MOVE_MAX_RATE (unset:
// Platform's default). Then BENCH_DEMOTIONS (default 1) of the promoted
// tenants go back into the pool database under freeze, under the same
// write load: total time and write freeze.
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import type { ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import { readFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { AuthService } from "../gen/tenantry/auth/v1/auth_service_pb.js";
import { EntryService } from "../gen/tenantry/backend/v1/entry_service_pb.js";
import { type Move } from "../gen/tenantry/platform/v1/move_pb.js";
import { MoveService } from "../gen/tenantry/platform/v1/move_service_pb.js";
import { Placement, PlatformService } from "../gen/tenantry/platform/v1/platform_service_pb.js";
import { createGrpcJsTransport, operatorCredentialInterceptor } from "../services/mesh/index.ts";
import { words } from "./backup-tenant.ts";
import { quantile, startBenchMesh, startBenchProcesses } from "./bench-processes.ts";
import { goalTable, table } from "./report.ts";

const promotions = Number(process.env.BENCH_PROMOTIONS ?? 3);
const entryCount = Number(process.env.BENCH_ENTRIES ?? 20_000);
const writeRate = Number(process.env.BENCH_WRITE_RATE ?? 50);
const writers = Number(process.env.BENCH_WRITERS ?? 4);
const neighbourCount = Number(process.env.BENCH_NEIGHBOURS ?? 4);
const demotionCount = Number(process.env.BENCH_DEMOTIONS ?? 1);
const ephemeral = process.env.BENCH_EPHEMERAL === "1";
const moveMaxRate = process.env.BENCH_MOVE_MAX_RATE;
const password = "bench-password";

/** Wall-clock time in ms with sub-ms precision, comparable with the services' log times. */
const now = () => performance.timeOrigin + performance.now();

function median(values: number[]): number {
  const sorted = values.toSorted((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** A line a service logged that tells where a freeze stands. */
interface LogLine {
  time: number;
  service: string;
  msg: string;
  tenantId?: string;
}
const watchedMessages = new Set(["tenant's writes frozen", "tenant's writes thawed"]);
const logLines: LogLine[] = [];
function watchLog(child: ChildProcess): void {
  let rest = "";
  child.stdout!.on("data", (chunk: Buffer) => {
    const lines = (rest + chunk.toString()).split("\n");
    rest = lines.pop()!;
    for (const line of lines) {
      try {
        const { time, service, msg, tenantId } = JSON.parse(line) as LogLine;
        if (watchedMessages.has(msg)) {
          logLines.push({ time, service, msg, tenantId });
        }
      } catch {
        // Not a log line.
      }
    }
  });
}

const bench = await startBenchProcesses({ ephemeral });
try {
  const mesh = await startBenchMesh(bench, { env: { TENANTRY_LOG_LEVEL: "info" }, platformEnv: moveMaxRate === undefined ? {} : { TENANTRY_MOVE_MAX_RATE: moveMaxRate } });
  for (const child of Object.values(mesh.processes)) {
    watchLog(child);
  }
  const admin = new pg.Client({ connectionString: bench.database.url });
  await admin.connect();
  const platformDb = new pg.Client({ connectionString: bench.database.urlFor("tenantry_platform") });
  await platformDb.connect();
  const platformTransport = createGrpcJsTransport({ address: `127.0.0.1:${mesh.ports.platform}`, interceptors: [operatorCredentialInterceptor(bench.operatorToken)] });
  const platform = createClient(PlatformService, platformTransport);
  const moveService = createClient(MoveService, platformTransport);
  const auth = createClient(AuthService, createGrpcJsTransport({ address: `127.0.0.1:${mesh.ports.auth}` }));
  const entries = createClient(EntryService, createGrpcJsTransport({ address: `127.0.0.1:${mesh.ports.backend}` }));

  /** A pooled tenant with its owner signed in: the headers of its calls. */
  const pooledTenant = async (tenantId: string) => {
    const { tenant } = await platform.createTenant({ tenantId, ownerEmail: "owner@example.com", ownerPassword: password, placement: Placement.POOLED });
    const { accessToken } = await auth.login({ email: "owner@example.com", password }, { headers: { "x-tenant-id": tenantId } });
    return { database: tenant!.database, headers: { "x-tenant-id": tenantId, authorization: `Bearer ${accessToken}` } };
  };

  interface Call {
    start: number;
    end: number;
    ok: boolean;
    retries: number;
  }
  /** Calls `call` until stopped, `perSecond` times a second over `lanes` callers, each retried on UNAVAILABLE for up to 30 s. */
  const steady = (perSecond: number, lanes: number, call: () => Promise<unknown>) => {
    const calls: Call[] = [];
    const failures = new Map<string, number>();
    let running = true;
    const lane = async (n: number) => {
      const period = (lanes * 1000) / perSecond;
      let next = now() + (n * period) / lanes;
      while (running) {
        await sleep(Math.max(0, next - now()));
        next = Math.max(next + period, now());
        const start = now();
        let retries = 0;
        let ok = false;
        for (;;) {
          try {
            await call();
            ok = true;
            break;
          } catch (error) {
            const cause = ConnectError.from(error);
            if (cause.code === Code.Unavailable && now() - start < 30_000) {
              retries++;
              await sleep(10);
              continue;
            }
            const key = `${Code[cause.code]}: ${cause.rawMessage.slice(0, 120)}`;
            failures.set(key, (failures.get(key) ?? 0) + 1);
            break;
          }
        }
        calls.push({ start, end: now(), ok, retries });
      }
    };
    const done = Promise.all(Array.from({ length: lanes }, (_, n) => lane(n)));
    return {
      calls,
      failures,
      stop: async () => {
        running = false;
        await done;
      },
    };
  };

  // The neighbours, in the pool database each promoted tenant is made in (pool databases fill first).
  process.stdout.write(`making ${neighbourCount} pooled neighbours…\n`);
  const neighbours = [];
  for (let i = 0; i < neighbourCount; i++) {
    const tenant = await pooledTenant(`neighbour-${i}`);
    const { entry } = await entries.createEntry({ title: "neighbour's entry", body: words(40), tags: ["bench"] }, { headers: tenant.headers });
    neighbours.push({ ...tenant, entryId: entry!.id });
  }
  const neighbourLoads = neighbours.flatMap((n) => [
    steady(10, 1, () => entries.createEntry({ title: `written ${randomUUID().slice(0, 8)}`, body: words(20), requestId: randomUUID() }, { headers: n.headers, timeoutMs: 30_000 })),
    steady(50, 1, () => entries.getEntry({ id: n.entryId }, { headers: n.headers, timeoutMs: 30_000 })),
  ]);

  interface Figures {
    total: number;
    mb: number;
    platformFreeze: number;
    backendFreeze?: number;
    gap: number;
    cutoverMax: number;
    p99: number;
    writes: number;
    retried: number;
    failed: number;
    steps: Record<string, number>;
  }
  const results: Figures[] = [];
  const loadBefore = (await readFile("/proc/loadavg", "utf8")).split(" ").slice(0, 3).join(" ");
  for (let round = 1; round <= promotions; round++) {
    const tenantId = `promoted-${round}`;
    const tenant = await pooledTenant(tenantId);
    const schema = `t_${tenantId.replaceAll("-", "_")}_backend`;
    // Its entries loaded straight into its schema of the pool database.
    const pool = new pg.Client({ connectionString: bench.database.urlFor(tenant.database) });
    await pool.connect();
    await pool.query(
      `insert into ${pg.escapeIdentifier(schema)}.entries (id, title, body, tags)
       select gen_random_uuid(), 'entry ' || i, $2, array['bench', 'tag' || (i % 50)] from generate_series(1, $1::int) i`,
      [entryCount, words(120)],
    );
    const { rows } = await pool.query<{ bytes: string }>(
      "select coalesce(sum(pg_total_relation_size(c.oid)), 0) as bytes from pg_class c join pg_namespace n on n.oid = c.relnamespace where starts_with(n.nspname, $1) and c.relkind in ('r', 'm', 'p')",
      [`t_${tenantId.replaceAll("-", "_")}_`],
    );
    await pool.query("checkpoint");
    await pool.end();
    const mb = Number(rows[0]!.bytes) / 1e6;

    const writes = steady(writeRate, writers, () =>
      entries.createEntry({ title: `written ${randomUUID().slice(0, 8)}`, body: words(40), tags: ["load"], requestId: randomUUID() }, { headers: tenant.headers, timeoutMs: 30_000 }),
    );
    await sleep(2000);
    const started = now();
    let move: Move;
    try {
      ({ move } = (await moveService.moveTenant({ tenantId, targetCluster: (await platform.getTenant({ tenantId })).tenant!.cluster, targetPlacement: Placement.DEDICATED }, { timeoutMs: 600_000 })) as {
        move: Move;
      });
    } catch (error) {
      throw new Error(`the promotion of ${tenantId} failed: ${ConnectError.from(error).rawMessage}`);
    }
    const ended = now();
    await sleep(2000);
    await writes.stop();
    if (writes.failures.size > 0) {
      process.stdout.write(`writes that failed: ${JSON.stringify(Object.fromEntries(writes.failures))}\n`);
    }
    const { rows: stepRows } = await platformDb.query<{ step: string; at: Date }>(
      "select detail->>'step' as step, occurred_at as at from platform.audit_events where action = 'MoveStep' and detail->>'moveId' = $1 and outcome = 'succeeded' order by id",
      [move.moveId],
    );
    const at = Object.fromEntries(stepRows.map((r) => [r.step, r.at.getTime()]));
    const steps: Record<string, number> = {};
    stepRows.forEach((r, i) => (steps[r.step] = i === 0 ? 0 : (r.at.getTime() - stepRows[i - 1]!.at.getTime()) / 1000));
    const cutoverFrom = at["catch-up"]!;
    const cutoverTo = at.cutover!;
    await sleep(200);
    const backendFrozen = logLines.find((l) => l.service === "backend" && l.msg === "tenant's writes frozen" && l.tenantId === tenantId && l.time >= cutoverFrom && l.time <= cutoverTo)?.time;
    const backendThawed = logLines.find((l) => l.service === "backend" && l.msg === "tenant's writes thawed" && l.tenantId === tenantId && l.time >= (backendFrozen ?? cutoverFrom))?.time;
    const acks = writes.calls.filter((w) => w.ok).map((w) => w.end).sort((a, b) => a - b);
    let gap = 0;
    for (let i = 1; i < acks.length; i++) {
      if (acks[i]! >= cutoverFrom && acks[i - 1]! <= cutoverTo) {
        gap = Math.max(gap, acks[i]! - acks[i - 1]!);
      }
    }
    const during = writes.calls.filter((w) => w.start >= started && w.start <= ended);
    const latencies = during.map((w) => w.end - w.start).sort((a, b) => a - b);
    const figures: Figures = {
      total: (ended - started) / 1000,
      mb,
      platformFreeze: Number(move.writeFreeze?.seconds ?? 0n) * 1000 + (move.writeFreeze?.nanos ?? 0) / 1e6,
      ...(backendFrozen !== undefined && backendThawed !== undefined ? { backendFreeze: backendThawed - backendFrozen } : {}),
      gap,
      cutoverMax: Math.max(0, ...writes.calls.filter((w) => w.end >= cutoverFrom && w.start <= cutoverTo).map((w) => w.end - w.start)),
      p99: latencies.length === 0 ? 0 : quantile(latencies, 0.99),
      writes: during.length,
      retried: during.filter((w) => w.retries > 0).length,
      failed: writes.calls.filter((w) => !w.ok).length,
      steps,
    };
    results.push(figures);
    process.stdout.write(
      `promotion ${round}: ${figures.mb.toFixed(1)} MB in ${figures.total.toFixed(2)} s; write freeze ${figures.platformFreeze.toFixed(0)} ms (Backend held ${figures.backendFreeze?.toFixed(0) ?? "?"} ms, writers' gap ${figures.gap.toFixed(0)} ms); cutover write max ${figures.cutoverMax.toFixed(0)} ms, p99 ${figures.p99.toFixed(0)} ms; ${figures.writes} writes, ${figures.retried} retried, ${figures.failed} failed\n`,
    );
  }
  // The way back: each promoted tenant (a database of its own now) into the pool database again, under freeze, under the same write load.
  interface Demotion {
    total: number;
    freeze: number;
    writes: number;
    retried: number;
    failed: number;
    maxWrite: number;
  }
  const demotions: Demotion[] = [];
  for (let round = 1; round <= Math.min(demotionCount, promotions); round++) {
    const tenantId = `promoted-${round}`;
    const { accessToken } = await auth.login({ email: "owner@example.com", password }, { headers: { "x-tenant-id": tenantId } });
    const headers = { "x-tenant-id": tenantId, authorization: `Bearer ${accessToken}` };
    const writes = steady(writeRate, writers, () =>
      entries.createEntry({ title: `written ${randomUUID().slice(0, 8)}`, body: words(40), tags: ["load"], requestId: randomUUID() }, { headers, timeoutMs: 30_000 }),
    );
    await sleep(2000);
    const started = now();
    let move: Move;
    try {
      ({ move } = (await moveService.moveTenant({ tenantId, targetCluster: (await platform.getTenant({ tenantId })).tenant!.cluster, targetPlacement: Placement.POOLED }, { timeoutMs: 600_000 })) as {
        move: Move;
      });
    } catch (error) {
      await writes.stop();
      process.stdout.write(`back into the pool ${round} failed: ${ConnectError.from(error).rawMessage}\n`);
      continue;
    }
    const ended = now();
    await sleep(2000);
    await writes.stop();
    const during = writes.calls.filter((w) => w.end >= started && w.start <= ended);
    const demotion = {
      total: (ended - started) / 1000,
      freeze: Number(move.writeFreeze?.seconds ?? 0n) * 1000 + (move.writeFreeze?.nanos ?? 0) / 1e6,
      writes: during.length,
      retried: during.filter((w) => w.retries > 0).length,
      failed: writes.calls.filter((w) => !w.ok).length,
      maxWrite: Math.max(0, ...during.map((w) => w.end - w.start)),
    };
    demotions.push(demotion);
    process.stdout.write(
      `back into the pool ${round}: ${demotion.total.toFixed(2)} s, writes frozen ${demotion.freeze.toFixed(0)} ms, longest write ${demotion.maxWrite.toFixed(0)} ms; ${demotion.writes} writes, ${demotion.retried} retried, ${demotion.failed} failed\n`,
    );
  }
  await Promise.all(neighbourLoads.map((l) => l.stop()));
  const loadAfter = (await readFile("/proc/loadavg", "utf8")).split(" ").slice(0, 3).join(" ");
  const neighbourCalls = neighbourLoads.flatMap((l) => l.calls);
  const neighbourFailures = new Map<string, number>();
  for (const load of neighbourLoads) {
    for (const [key, n] of load.failures) {
      neighbourFailures.set(key, (neighbourFailures.get(key) ?? 0) + n);
    }
  }
  const neighbourLatencies = neighbourCalls.map((c) => c.end - c.start).sort((a, b) => a - b);

  const { rows: versionRows } = await admin.query<{ version: string }>("select current_setting('server_version') as version");
  process.stdout.write(
    `\nPromotions pooled → dedicated on one embedded PostgreSQL ${versionRows[0]!.version} (${ephemeral ? "no fsync" : "fsync on"}), ${writeRate} writes/s on the promoted tenant, ${neighbourCount} neighbours (10 writes/s + 50 GetEntry/s each); load average ${loadBefore} → ${loadAfter}\n`,
  );
  process.stdout.write(
    table(
    ["promotion", "MB", "total s", "freeze ms (Platform)", "Backend held ms", "writers' gap ms", "cutover write max ms", "write p99 ms", "writes", "retried", "failed"],
    results.map((r, i) => [
      String(i + 1),
      r.mb.toFixed(1),
      r.total.toFixed(2),
      r.platformFreeze.toFixed(0),
      r.backendFreeze?.toFixed(0) ?? "",
      r.gap.toFixed(0),
      r.cutoverMax.toFixed(0),
      r.p99.toFixed(0),
      String(r.writes),
      String(r.retried),
      String(r.failed),
    ]),
  ) + "\n",
  );
  if (demotions.length > 0) {
    process.stdout.write(
      table(
        ["back into the pool (under freeze)", "total s", "freeze ms", "longest write ms", "writes", "retried", "failed"],
        demotions.map((d, i) => [String(i + 1), d.total.toFixed(2), d.freeze.toFixed(0), d.maxWrite.toFixed(0), String(d.writes), String(d.retried), String(d.failed)]),
      ) + "\n",
    );
  }
  process.stdout.write(`steps (s, median): ${Object.keys(results[0]!.steps).map((s) => `${s} ${median(results.map((r) => r.steps[s] ?? 0)).toFixed(2)}`).join(", ")}\n`);
  process.stdout.write(
    `neighbours: ${neighbourCalls.length} calls, ${neighbourCalls.filter((c) => c.retries > 0).length} retried, ${neighbourCalls.filter((c) => !c.ok).length} failed${neighbourFailures.size === 0 ? "" : ` (${JSON.stringify(Object.fromEntries(neighbourFailures))})`}, p99 ${neighbourLatencies.length === 0 ? 0 : quantile(neighbourLatencies, 0.99).toFixed(0)} ms\n`,
  );
  const worstFreeze = Math.max(...results.map((r) => Math.max(r.platformFreeze, r.backendFreeze ?? 0, r.gap)));
  const failedWrites = results.reduce((n, r) => n + r.failed, 0) + demotions.reduce((n, d) => n + d.failed, 0) + neighbourCalls.filter((c) => !c.ok).length;
  process.stdout.write(
    goalTable([
      {
        measure: "write freeze of a promotion, worst of Platform's, Backend's and the writers' gap (ms)",
        figure: worstFreeze,
        shown: `${worstFreeze.toFixed(0)} (median Platform ${median(results.map((r) => r.platformFreeze)).toFixed(0)})`,
        atMost: 1000,
      },
      { measure: "calls failed: the moved tenants' writes and their neighbours' calls", figure: failedWrites, shown: String(failedWrites), atMost: 0 },
    ]) + "\n",
  );
  await admin.end();
  await platformDb.end();
} finally {
  await bench.stop();
}
