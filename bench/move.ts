// npm run bench:move: moves of one ~100 MB dedicated tenant between two PostgreSQL
// servers (two embedded servers, each a cluster) under a steady write load
// on that tenant: each move's total time, the initial copy's MB/s, the
// write freeze (as Backend held it, from its logs; as Platform recorded it;
// and as the writing clients saw it: the longest gap between acknowledged
// writes), the longest write latency during the cutover and the p99 of
// write latency during the whole move; GetEntry throughput of other
// tenants on both servers while a move runs against without, in pairs of
// rounds whose order turns every pair; then moves under freeze
// (MOVE_MODE_COPY_UNDER_FREEZE) of the same tenant. Moves go back and
// forth between the servers; figures are medians. The cutover's time is
// split by what Platform and Backend log (freeze announced and held,
// acknowledged, route switched, thawed), and each move's steps by the
// audit log. BENCH_MOVES (default 4 online moves), BENCH_FREEZE_MOVES
// (default 2), BENCH_ENTRIES (default 100000: ~100 MB), BENCH_WRITE_RATE
// (default 50 writes/s, CreateEntry with a request id, retried on
// UNAVAILABLE), BENCH_WRITERS (default 4), BENCH_CONCURRENCY (default 16
// GetEntry callers, half on each server's tenants; 0: no GetEntry rounds, the moves alone), BENCH_DIGESTS=1
// (compare_digests), BENCH_EPHEMERAL=1 runs PostgreSQL without fsync,
// BENCH_PG_BIN runs another PostgreSQL build (its bin/ folder) for both,
// BENCH_MOVE_MAX_RATE sets Platform's TENANTRY_MOVE_MAX_RATE (the initial
// copy's pace, such as 8MB; 0 for none; unset, Platform's default).
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import type { ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { AuthService } from "../gen/tenantry/auth/v1/auth_service_pb.js";
import { EntryService } from "../gen/tenantry/backend/v1/entry_service_pb.js";
import { ClusterService } from "../gen/tenantry/platform/v1/cluster_service_pb.js";
import { MoveMode, type Move } from "../gen/tenantry/platform/v1/move_pb.js";
import { MoveService } from "../gen/tenantry/platform/v1/move_service_pb.js";
import { Placement, PlatformService } from "../gen/tenantry/platform/v1/platform_service_pb.js";
import { createGrpcJsTransport, operatorCredentialInterceptor, startEmbeddedDatabase } from "../services/mesh/index.ts";
import { freePort } from "../services/testing/free-port.ts";
import { fillTenant, words } from "./backup-tenant.ts";
import { quantile, startBenchMesh, startBenchProcesses } from "./bench-processes.ts";
import { startCpuMeter } from "./cpu-meter.ts";
import { driveGetEntry, summarize, type Round, type Target } from "./get-entry-load.ts";
import { goalTable, table } from "./report.ts";

const pgBin = process.env.BENCH_PG_BIN;
const onlineMoves = Number(process.env.BENCH_MOVES ?? 4);
const freezeMoves = Number(process.env.BENCH_FREEZE_MOVES ?? 2);
const entryCount = Number(process.env.BENCH_ENTRIES ?? 100_000);
const writeRate = Number(process.env.BENCH_WRITE_RATE ?? 50);
const writers = Number(process.env.BENCH_WRITERS ?? 4);
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 16);
const digests = process.env.BENCH_DIGESTS === "1";
const ephemeral = process.env.BENCH_EPHEMERAL === "1";
const moveMaxRate = process.env.BENCH_MOVE_MAX_RATE;
/** The length of a round without a move before any move has been timed, s. */
const firstQuietSeconds = 10;
const othersPerServer = 10;
const userCount = 20_000;
const password = "bench-password";
const tenantId = "big";

/** Wall-clock time in ms with sub-ms precision, comparable with the services' log times. */
const now = () => performance.timeOrigin + performance.now();

/** The figure of the middle value. */
function median(values: number[]): number {
  const sorted = values.toSorted((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** A line a service logged that tells where a freeze or a move stands. */
interface LogLine {
  time: number;
  service: string;
  msg: string;
  tenantId?: string;
  /** Of "move's tables copied": the table data's bytes, ms copying them, ms rebuilding keys and indexes. */
  bytes?: number;
  copyMs?: number;
  rebuildMs?: number;
}
const watchedMessages = new Set(["tenant's writes frozen", "tenant's writes thawed", "tenant switched to its new cluster", "tenant moved", "move's tables copied"]);
const logLines: LogLine[] = [];
/** Keeps the lines of `child`'s JSON log that tell where a freeze or a move stands. */
function watchLog(child: ChildProcess): void {
  let rest = "";
  child.stdout!.on("data", (chunk: Buffer) => {
    const lines = (rest + chunk.toString()).split("\n");
    rest = lines.pop()!;
    for (const line of lines) {
      try {
        const entry = JSON.parse(line) as LogLine;
        if (watchedMessages.has(entry.msg)) {
          const { time, service, msg, tenantId, bytes, copyMs, rebuildMs } = entry;
          logLines.push({ time, service, msg, tenantId, bytes, copyMs, rebuildMs });
        }
      } catch {
        // Not a log line.
      }
    }
  });
}
/** The first line of `service` saying `msg` of the moved tenant between `from` and `to`. */
const logged = (service: string, msg: string, from: number, to = Infinity) =>
  logLines.find((l) => l.service === service && l.msg === msg && l.tenantId === tenantId && l.time >= from && l.time <= to)?.time;

const bench = await startBenchProcesses({ ephemeral, ...(pgBin === undefined ? {} : { installDir: path.dirname(pgBin) }) });
const secondDir = await mkdtemp(path.join(os.tmpdir(), "tenantry-bench-second-"));
let second: Awaited<ReturnType<typeof startEmbeddedDatabase>> | undefined;
try {
  second = await startEmbeddedDatabase({ dir: secondDir, port: await freePort(), ephemeral, ...(pgBin === undefined ? {} : { installDir: path.dirname(pgBin) }) });
  const servers = [bench.database, second];
  const admins = await Promise.all(
    servers.map(async (server) => {
      const client = new pg.Client({ connectionString: server.url });
      await client.connect();
      return client;
    }),
  );
  const platformDb = new pg.Client({ connectionString: bench.database.urlFor("tenantry_platform") });
  const { rows: versionRows } = await admins[0]!.query<{ version: string }>("select current_setting('server_version') as version");
  const serverVersion = versionRows[0]!.version;

  // Info level for the freeze's and the move's log lines (a handful per move).
  const mesh = await startBenchMesh(bench, { env: { TENANTRY_LOG_LEVEL: "info" }, platformEnv: moveMaxRate === undefined ? {} : { TENANTRY_MOVE_MAX_RATE: moveMaxRate } });
  for (const child of Object.values(mesh.processes)) {
    watchLog(child);
  }
  await platformDb.connect();
  const platformTransport = createGrpcJsTransport({ address: `127.0.0.1:${mesh.ports.platform}`, interceptors: [operatorCredentialInterceptor(bench.operatorToken)] });
  const platform = createClient(PlatformService, platformTransport);
  const clusterService = createClient(ClusterService, platformTransport);
  const moveService = createClient(MoveService, platformTransport);
  const authTransport = createGrpcJsTransport({ address: `127.0.0.1:${mesh.ports.auth}` });
  const auth = createClient(AuthService, authTransport);
  const backendTransport = createGrpcJsTransport({ address: `127.0.0.1:${mesh.ports.backend}` });
  const entries = createClient(EntryService, backendTransport);

  const { clusters: registered } = await clusterService.listClusters({});
  const first = registered[0]!.name;
  await clusterService.registerCluster({
    name: "second",
    host: "127.0.0.1",
    port: second.port,
    adminUser: "postgres",
    adminPassword: decodeURIComponent(new URL(second.url).password),
    capacity: 1000,
    region: "local",
  });
  const clusterNames = [first, "second"];
  const { clusters } = await clusterService.listClusters({});
  const unsupported = clusters.filter((c) => !c.onlineMoveSource || !c.onlineMoveTarget);
  if (unsupported.length > 0) {
    throw new Error(`online moves are not possible: ${unsupported.map((c) => `${c.name}: ${c.onlineMoveNote}`).join("; ")}`);
  }

  // The tenant moved: its owner through Platform, the rest loaded straight into its database.
  process.stdout.write(`loading ${entryCount} entries and ${userCount} users into tenant "${tenantId}"…\n`);
  await platform.createTenant({ tenantId, placement: Placement.DEDICATED, ownerEmail: "owner@example.com", ownerPassword: password, cluster: first });
  const placeOf = async () => {
    const { tenant } = await platform.getTenant({ tenantId });
    return { server: clusterNames.indexOf(tenant!.cluster), database: tenant!.database };
  };
  const fillStarted = performance.now();
  {
    const tenantDb = new pg.Client({ connectionString: bench.database.urlFor((await placeOf()).database) });
    await tenantDb.connect();
    await fillTenant(tenantDb, { entries: entryCount, users: userCount, passwordOf: "owner@example.com" });
    await tenantDb.end();
  }
  const sizeOf = async () => {
    const { server, database } = await placeOf();
    const { rows } = await admins[server]!.query<{ bytes: string }>("select pg_database_size($1) as bytes", [database]);
    return Number(rows[0]!.bytes) / 1e6;
  };
  const databaseMb = await sizeOf();
  process.stdout.write(`tenant "${tenantId}": ${databaseMb.toFixed(0)} MB, loaded in ${((performance.now() - fillStarted) / 1000).toFixed(1)} s\n`);

  // Other tenants, half on each server, read while the moves run.
  const targets: Target[][] = [[], []];
  for (let i = 0; i < 2 * othersPerServer; i++) {
    const id = `other-${i}`;
    const server = i % 2;
    await platform.createTenant({ tenantId: id, placement: Placement.DEDICATED, ownerEmail: "owner@example.com", ownerPassword: password, cluster: clusterNames[server]! });
    const { accessToken: token } = await auth.login({ email: "owner@example.com", password }, { headers: { "x-tenant-id": id } });
    const { entry } = await entries.createEntry({ title: `entry of ${id}`, body: words(60), tags: ["bench"] }, { headers: { "x-tenant-id": id, authorization: `Bearer ${token}` } });
    targets[server]!.push({ tenantId: id, token, id: entry!.id });
  }

  // The steady write load on the moved tenant: CreateEntry at a fixed pace, each call retried on UNAVAILABLE with its request id.
  interface Write {
    start: number;
    end: number;
    ok: boolean;
    retries: number;
  }
  const writes: Write[] = [];
  const writeFailures = new Map<string, number>();
  const { accessToken: writerToken } = await auth.login({ email: "owner@example.com", password }, { headers: { "x-tenant-id": tenantId } });
  const writeHeaders = { "x-tenant-id": tenantId, authorization: `Bearer ${writerToken}` };
  let writing = true;
  const writeLoop = async (writer: number) => {
    const period = (writers * 1000) / writeRate;
    let next = now() + (writer * period) / writers;
    while (writing) {
      await sleep(Math.max(0, next - now()));
      // A writer held past its turn goes on at once, without a burst to catch up.
      next = Math.max(next + period, now());
      const request = { title: `written ${randomUUID().slice(0, 8)}`, body: words(40), tags: ["load"], requestId: randomUUID() };
      const start = now();
      let retries = 0;
      let ok = false;
      for (;;) {
        try {
          await entries.createEntry(request, { headers: writeHeaders, timeoutMs: 30_000 });
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
          writeFailures.set(key, (writeFailures.get(key) ?? 0) + 1);
          break;
        }
      }
      writes.push({ start, end: now(), ok, retries });
    }
  };
  const writing$ = Promise.all(Array.from({ length: writers }, (_, w) => writeLoop(w)));

  /** One move measured. */
  interface MoveFigures {
    mode: string;
    from: string;
    to: string;
    /** MoveTenant's time, s. */
    total: number;
    /** Initial copy (online): publish recorded to copy-tables recorded (slot, paced copy, indexes rebuilt), s. */
    initialCopy?: number;
    /** Of the initial copy (Platform's log): MB of table data (binary COPY), s copying it, s rebuilding keys and indexes. */
    copied?: { mb: number; copy: number; rebuild: number };
    mb: number;
    /** Platform's write_freeze: frozen (every service acknowledged) to switched, ms. */
    platformFreeze: number;
    /** Backend's log: the freeze heard (held from then) to thawed, ms. */
    backendFreeze?: number;
    /** The longest gap between acknowledged writes across the cutover, ms. */
    gap: number;
    /** The longest latency of a write that ran into the cutover, ms. */
    cutoverMax: number;
    /** p99 of the latency of writes started during the move, ms. */
    p99: number;
    writes: number;
    retried: number;
    failed: number;
    /** CPU seconds of both PostgreSQL servers, and of Platform, during the move (other tenants' reads included when they run). */
    postgresCpu: number;
    /** Every moved table's rows counted on the target after the move, one after another, ms. */
    countMs: number;
    /** Of which the source's, s. */
    sourceCpu: number;
    platformCpu: number;
    /** The cutover's parts, ms (see `parts`). */
    parts: Record<string, number | undefined>;
    /** Each step's time from the one before, s. */
    steps: Record<string, number>;
  }
  const moveTimes: number[] = [];
  const moveOnce = async (mode: MoveMode): Promise<MoveFigures> => {
    const { server } = await placeOf();
    const to = clusterNames[1 - server]!;
    const mb = await sizeOf();
    const cpuUsed = await Promise.all([startCpuMeter(mesh.processes.platform!.pid!, servers[0]!.pid), startCpuMeter(mesh.backend.pid!, servers[1]!.pid)]);
    const started = now();
    let move: Move;
    try {
      ({ move } = (await moveService.moveTenant({ tenantId, targetCluster: to, mode, compareDigests: digests }, { timeoutMs: 600_000 })) as { move: Move });
    } catch (error) {
      throw new Error(`the move to ${to} failed: ${ConnectError.from(error).rawMessage}`);
    }
    const ended = now();
    const [onFirst, onSecond] = await Promise.all(cpuUsed.map((used) => used()));
    // For reference: what the cutover's comparison costs one side, every moved table's rows counted, on the target now.
    const counted = await (async () => {
      const { server: at, database } = await placeOf();
      const client = new pg.Client({ connectionString: servers[at]!.urlFor(database) });
      await client.connect();
      try {
        const { rows: tables } = await client.query<{ name: string }>(
          "select format('%I.%I', schemaname, tablename) as name from pg_tables where schemaname in ('auth', 'backend') and tablename <> 'mikro_orm_migrations'",
        );
        const t0 = now();
        for (const { name } of tables) {
          await client.query(`select count(*) from ${name}`);
        }
        return now() - t0;
      } finally {
        await client.end();
      }
    })();
    moveTimes.push((ended - started) / 1000);
    // The audit log's step records, each when its step was done.
    const { rows } = await platformDb.query<{ step: string; at: Date }>(
      "select detail->>'step' as step, occurred_at as at from platform.audit_events where action = 'MoveStep' and detail->>'moveId' = $1 and outcome = 'succeeded' order by id",
      [move.moveId],
    );
    const at = Object.fromEntries(rows.map((r) => [r.step, r.at.getTime()]));
    const steps: Record<string, number> = {};
    rows.forEach((r, i) => (steps[r.step] = i === 0 ? 0 : (r.at.getTime() - rows[i - 1]!.at.getTime()) / 1000));
    // Freeze and cutover from the services' logs; the cutover begins once the step before it was recorded.
    const cutoverFrom = at[mode === MoveMode.ONLINE ? "catch-up" : "migrate-schemas"]!;
    const cutoverTo = at.cutover!;
    // Give the log lines a moment to arrive.
    await sleep(200);
    const backendFrozen = logged("backend", "tenant's writes frozen", cutoverFrom, cutoverTo);
    const backendThawed = logged("backend", "tenant's writes thawed", backendFrozen ?? cutoverFrom);
    const platformFrozen = logged("platform", "tenant's writes frozen", cutoverFrom, cutoverTo);
    const switched = logged("platform", "tenant switched to its new cluster", cutoverFrom);
    const platformThawed = logged("platform", "tenant's writes thawed", switched ?? cutoverFrom);
    const copiedLine = logLines.find((l) => l.service === "platform" && l.msg === "move's tables copied" && l.tenantId === tenantId && l.time >= started && l.time <= ended);
    const minus = (a?: number, b?: number) => (a === undefined || b === undefined ? undefined : a - b);
    const parts = {
      "step begun → Backend holds writes (connect, announce)": minus(backendFrozen, cutoverFrom),
      "→ every service acknowledged (Platform frozen)": minus(platformFrozen, backendFrozen),
      "→ route switched (marker, compare, shut out, marker, sequences, record)": minus(switched, platformFrozen),
      "→ Platform thawed": minus(platformThawed, switched),
      "→ Backend thawed": minus(backendThawed, platformThawed),
    };
    // Writes across the cutover: the acknowledgements' longest gap, and the slowest write that ran into it.
    const acks = writes.filter((w) => w.ok).map((w) => w.end).sort((a, b) => a - b);
    let gap = 0;
    for (let i = 1; i < acks.length; i++) {
      if (acks[i]! >= cutoverFrom && acks[i - 1]! <= cutoverTo) {
        gap = Math.max(gap, acks[i]! - acks[i - 1]!);
      }
    }
    const overlapping = writes.filter((w) => w.end >= cutoverFrom && w.start <= cutoverTo);
    const during = writes.filter((w) => w.start >= started && w.start <= ended);
    const latencies = during.map((w) => w.end - w.start).sort((a, b) => a - b);
    return {
      mode: mode === MoveMode.ONLINE ? "online" : "under freeze",
      from: clusterNames[server]!,
      to,
      total: (ended - started) / 1000,
      ...(at["copy-tables"] !== undefined && at.publish !== undefined ? { initialCopy: (at["copy-tables"] - at.publish) / 1000 } : {}),
      ...(copiedLine?.bytes === undefined ? {} : { copied: { mb: copiedLine.bytes / 1e6, copy: copiedLine.copyMs! / 1000, rebuild: copiedLine.rebuildMs! / 1000 } }),
      mb,
      platformFreeze: Number(move.writeFreeze?.seconds ?? 0n) * 1000 + (move.writeFreeze?.nanos ?? 0) / 1e6,
      ...(backendFrozen !== undefined && backendThawed !== undefined ? { backendFreeze: backendThawed - backendFrozen } : {}),
      gap,
      cutoverMax: Math.max(0, ...overlapping.map((w) => w.end - w.start)),
      p99: latencies.length === 0 ? 0 : quantile(latencies, 0.99),
      writes: during.length,
      retried: during.filter((w) => w.retries > 0).length,
      failed: during.filter((w) => !w.ok).length,
      postgresCpu: onFirst!.postgres + onSecond!.postgres,
      countMs: counted,
      sourceCpu: server === 0 ? onFirst!.postgres : onSecond!.postgres,
      platformCpu: onFirst!.server,
      parts,
      steps,
    };
  };

  /** Flushes what earlier rounds wrote on both servers, so that no round pays for another's checkpoint. */
  const settle = () => Promise.all(admins.map((a) => a.query("checkpoint")));
  const load = (server: number, duration: number, signal?: AbortSignal) =>
    driveGetEntry(`127.0.0.1:${mesh.ports.backend}`, {
      targets: targets[server]!,
      concurrency: Math.max(1, Math.floor(concurrency / 2)),
      duration,
      serverPid: mesh.backend.pid!,
      postmasterPid: servers[server]!.pid,
      ...(signal === undefined ? {} : { signal }),
    });
  /** Platform's CPU seconds and the seconds they were measured over, per kind of round. */
  const platformCpu = { quiet: { cpu: 0, seconds: 0 }, during: { cpu: 0, seconds: 0 } };
  const driveBoth = async (duration: number, signal?: AbortSignal) => {
    const started = performance.now();
    const platformUsed = await startCpuMeter(mesh.processes.platform!.pid!, bench.database.pid);
    const rounds = await Promise.all([load(0, duration, signal), load(1, duration, signal)]);
    const sum = platformCpu[signal === undefined ? "quiet" : "during"];
    sum.cpu += (await platformUsed()).server;
    sum.seconds += (performance.now() - started) / 1000;
    return rounds;
  };
  if (concurrency > 0) {
    await driveBoth(2);
  }
  Object.assign(platformCpu, { quiet: { cpu: 0, seconds: 0 } });

  const loadAverage = async () => (await readFile("/proc/loadavg", "utf8")).split(" ").slice(0, 3).join(" ");
  const loadBefore = await loadAverage();
  const quiet: Round[][] = [[], []];
  const during: Round[][] = [[], []];
  const figures: MoveFigures[] = [];
  const report = (f: MoveFigures) =>
    process.stdout.write(
      `${f.mode} ${f.from} → ${f.to}: ${f.total.toFixed(2)} s` +
        (f.initialCopy === undefined ? "" : `, initial copy ${f.initialCopy.toFixed(2)} s (${(f.mb / f.initialCopy).toFixed(1)} MB/s)`) +
        (f.copied === undefined ? "" : ` [${f.copied.mb.toFixed(0)} MB of table data copied in ${f.copied.copy.toFixed(2)} s, keys and indexes rebuilt in ${f.copied.rebuild.toFixed(2)} s]`) +
        `, freeze ${f.backendFreeze?.toFixed(0) ?? "?"} ms held by Backend, ${f.platformFreeze.toFixed(0)} ms recorded, longest gap between writes ${f.gap.toFixed(0)} ms, slowest write ${f.cutoverMax.toFixed(0)} ms, write p99 ${f.p99.toFixed(1)} ms` +
        ` (${f.writes} writes, ${f.retried} retried, ${f.failed} failed); CPU: PostgreSQL ${f.postgresCpu.toFixed(2)} s (source ${f.sourceCpu.toFixed(2)} s, target ${(f.postgresCpu - f.sourceCpu).toFixed(2)} s), Platform ${f.platformCpu.toFixed(2)} s\n    cutover: ${Object.entries(f.parts)
          .map(([k, v]) => `${k.split(" (")[0]} ${v?.toFixed(0) ?? "?"} ms`)
          .join(", ")}; rows counted on one side in ${f.countMs.toFixed(0)} ms\n    steps: ${Object.entries(f.steps)
          .map(([k, v]) => `${k} ${v.toFixed(2)}`)
          .join(", ")}\n`,
    );
  process.stdout.write(`${onlineMoves} online moves, each beside GetEntry of other tenants, paired with rounds without a move; ${writeRate} writes/s on "${tenantId}" throughout…\n`);
  for (let round = 0; round < onlineMoves; round++) {
    // Both kinds of round go first in turn.
    for (const moving of round % 2 === 0 ? [false, true] : [true, false]) {
      await settle();
      if (concurrency === 0) {
        if (moving) {
          const measured = await moveOnce(MoveMode.ONLINE);
          figures.push(measured);
          report(measured);
        }
      } else if (moving) {
        const ended = new AbortController();
        const rounds = driveBoth(600, ended.signal);
        const measured = await moveOnce(MoveMode.ONLINE).finally(() => ended.abort());
        const [a, b] = await rounds;
        during[0]!.push(a);
        during[1]!.push(b);
        figures.push(measured);
        report(measured);
      } else {
        const [a, b] = await driveBoth(moveTimes.length === 0 ? firstQuietSeconds : median(moveTimes));
        quiet[0]!.push(a);
        quiet[1]!.push(b);
      }
    }
  }
  process.stdout.write(`${freezeMoves} moves under freeze…\n`);
  const frozenMoves: MoveFigures[] = [];
  for (let round = 0; round < freezeMoves; round++) {
    await settle();
    const measured = await moveOnce(MoveMode.COPY_UNDER_FREEZE);
    frozenMoves.push(measured);
    report(measured);
  }
  const loadAfter = await loadAverage();
  writing = false;
  await writing$;

  await Promise.all(admins.map((a) => a.end()));
  await platformDb.end();
  platformTransport.close();
  authTransport.close();
  backendTransport.close();

  const rps = (r: Round) => r.calls / r.seconds;
  const ratioOf = (server: number) => median(during[server]!.map((r, i) => rps(r) / rps(quiet[server]![i]!)));
  const ratios = [ratioOf(0), ratioOf(1)];
  const sec = (values: number[]) => `${median(values).toFixed(2)} s`;
  const ms = (values: number[]) => `${median(values).toFixed(0)} ms`;
  const range = (values: number[], digits = 0) => `${Math.min(...values).toFixed(digits)}–${Math.max(...values).toFixed(digits)}`;
  const online = figures;
  const copyRates = online.flatMap((f) => (f.initialCopy === undefined ? [] : [f.mb / f.initialCopy]));
  const backendFreezes = online.flatMap((f) => (f.backendFreeze === undefined ? [] : [f.backendFreeze]));
  const frozenBackend = frozenMoves.flatMap((f) => (f.backendFreeze === undefined ? [] : [f.backendFreeze]));
  const worstFreeze = Math.max(...backendFreezes, ...online.map((f) => f.gap));
  const partNames = Object.keys(online[0]?.parts ?? {});
  /** CPU of the round's PostgreSQL server, of Backend and of this process, in cores on average over the rounds. */
  const cores = (rounds: Round[]) => {
    const seconds = rounds.reduce((n, r) => n + r.seconds, 0);
    return (["postgres", "server", "client"] as const).map((key) => (rounds.reduce((n, r) => n + r.cpu[key], 0) / seconds).toFixed(2));
  };
  const q = concurrency === 0 ? [] : [summarize(quiet[0]!), summarize(quiet[1]!)];
  const d = concurrency === 0 ? [] : [summarize(during[0]!), summarize(during[1]!)];
  const moveRow = (what: string, values: number[], shown: (v: number[]) => string, digits = 0) => [what, values.length === 0 ? "" : shown(values), values.length > 1 ? range(values, digits) : ""];
  const getEntryReport = () => `GetEntry of ${othersPerServer} other tenants on each server, ${Math.max(1, Math.floor(concurrency / 2))} callers each, ${onlineMoves} pairs of rounds (one beside an online move, for its whole time; one without, as long as the median move)
${table(
  ["rounds", "req/s", "p50 ms", "p99 ms", "errors", "its PostgreSQL, cores", "Backend, cores", "bench, cores"],
  [0, 1].flatMap((s) => [
    [`${clusterNames[s]}: without a move`, median(quiet[s]!.map(rps)).toFixed(0), q[s]!.p50.toFixed(2), q[s]!.p99.toFixed(2), String(q[s]!.errors), ...cores(quiet[s]!)],
    [`${clusterNames[s]}: during a move`, median(during[s]!.map(rps)).toFixed(0), d[s]!.p50.toFixed(2), d[s]!.p99.toFixed(2), String(d[s]!.errors), ...cores(during[s]!)],
  ]),
)}
(Backend, PostgreSQL and the bench's own process, which drives both servers' callers and the writers: CPU over the rounds, in cores)
Platform's CPU: ${(platformCpu.quiet.cpu / platformCpu.quiet.seconds).toFixed(2)} cores without a move, ${(platformCpu.during.cpu / platformCpu.during.seconds).toFixed(2)} during one
machine load average (1, 5, 15 min) before the rounds: ${loadBefore}; after: ${loadAfter}; other work on the machine during the rounds without a move: ${q[0]!.othersCores.toFixed(2)} of ${os.availableParallelism()} cores on average (the second server counted as other work)`;
  process.stdout.write(`
Moves of one tenant (a ${databaseMb.toFixed(0)} MB database: ${entryCount} entries, ${userCount} users) between two PostgreSQL ${serverVersion} servers on this machine (${ephemeral ? "without fsync" : "durable"}${moveMaxRate === undefined ? "" : `, TENANTRY_MOVE_MAX_RATE=${moveMaxRate}`}),
${writeRate} writes/s on it throughout (${writers} writers, CreateEntry retried on UNAVAILABLE)${digests ? ", comparing digests at the cutover" : ""}; medians of ${online.length} online moves and ${frozenMoves.length} under freeze, back and forth
${table(
  ["measure", "median", "range"],
  [
    moveRow("online: MoveTenant, total", online.map((f) => f.total), sec, 2),
    moveRow("online: initial copy (slot made → every table copied, indexes rebuilt)", online.flatMap((f) => (f.initialCopy === undefined ? [] : [f.initialCopy])), sec, 2),
    moveRow("online: initial copy, MB/s of the database's size", copyRates, (v) => median(v).toFixed(1), 1),
    moveRow("online: initial copy: table data copied (binary COPY), MB", online.flatMap((f) => (f.copied === undefined ? [] : [f.copied.mb])), (v) => median(v).toFixed(0)),
    moveRow("online: initial copy: time copying it", online.flatMap((f) => (f.copied === undefined ? [] : [f.copied.copy])), sec, 2),
    moveRow("online: initial copy: then rebuilding keys and indexes", online.flatMap((f) => (f.copied === undefined ? [] : [f.copied.rebuild])), sec, 2),
    moveRow("online: write freeze, as Backend held it (log: frozen → thawed)", backendFreezes, ms),
    moveRow("online: write freeze, as Platform records it (acknowledged → switched)", online.map((f) => f.platformFreeze), ms),
    moveRow("online: longest gap between acknowledged writes across the cutover", online.map((f) => f.gap), ms),
    moveRow("online: slowest write that ran into the cutover", online.map((f) => f.cutoverMax), ms),
    moveRow("online: p99 of write latency during the move", online.map((f) => f.p99), (v) => `${median(v).toFixed(1)} ms`, 1),
    ...partNames.map((name) =>
      moveRow(
        `online cutover: ${name}`,
        online.flatMap((f) => (f.parts[name] === undefined ? [] : [f.parts[name]!])),
        ms,
      ),
    ),
    moveRow("for reference: every moved table's rows counted on one side, after the move", online.map((f) => f.countMs), ms),
    moveRow("online: CPU of both PostgreSQL servers during the move (other tenants' reads included)", online.map((f) => f.postgresCpu), sec, 2),
    moveRow("online: of which the source server's", online.map((f) => f.sourceCpu), sec, 2),
    moveRow("online: CPU of Platform during the move", online.map((f) => f.platformCpu), sec, 2),
    moveRow("under freeze: MoveTenant, total", frozenMoves.map((f) => f.total), sec, 2),
    moveRow("under freeze: write freeze, as Backend held it", frozenBackend, ms),
    moveRow("under freeze: write freeze, as Platform records it (the copy)", frozenMoves.map((f) => f.platformFreeze), ms),
    moveRow("under freeze: longest gap between acknowledged writes", frozenMoves.map((f) => f.gap), ms),
    moveRow("under freeze: CPU of both PostgreSQL servers during the move", frozenMoves.map((f) => f.postgresCpu), sec, 2),
  ],
)}
writes during the moves: ${[...online, ...frozenMoves].reduce((n, f) => n + f.writes, 0)}, retried after UNAVAILABLE ${[...online, ...frozenMoves].reduce((n, f) => n + f.retried, 0)}, failed ${[...online, ...frozenMoves].reduce((n, f) => n + f.failed, 0)}${writeFailures.size === 0 ? "" : ` (${[...writeFailures].map(([k, n]) => `${n}× ${k}`).join("; ")})`}

${concurrency === 0 ? `no GetEntry rounds (BENCH_CONCURRENCY=0); machine load average (1, 5, 15 min) before the moves: ${loadBefore}; after: ${loadAfter}
` : getEntryReport()}

Goal: moves
${goalTable([
  { measure: "write freeze of an online move, longest (Backend's hold or the writers' gap), ms", figure: worstFreeze, shown: worstFreeze.toFixed(0), atMost: 1000, goal: "≤ 1000" },
  ...(concurrency === 0
    ? []
    : [0, 1].map((s) => ({ measure: `GetEntry of other tenants on ${clusterNames[s]} during a move / without`, figure: ratios[s]!, shown: ratios[s]!.toFixed(2), atLeast: 0.8, goal: "≥ 0.80" }))),
])}
`);
} finally {
  await bench.stopProcesses();
  await second?.stop();
  await rm(secondDir, { recursive: true, force: true });
  await bench.stop();
}
