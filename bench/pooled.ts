// npm run bench:pooled: the pooled placement at scale, on one server.
// BENCH_POOLED_TENANTS (default 10,000) pooled tenants are provisioned
// through CreateTenant, BENCH_PROVISION_CONCURRENCY (default 1: one after
// another) at once, each timed, then:
//   disk: what the pool databases and the shared catalogs grew by, per
//     tenant, and where it went;
//   memory: Backend (bench/backend-pooled.ts: real routes, tokens verified
//     against a key set made per tenant) creates one entry for each tenant,
//     and its memory after garbage collection, its connections closed as
//     idle, is compared with the same process when it knew 10 tenants,
//     after as many calls over those 10;
//   GetEntry: Zipf(1.1) traffic over all the tenants' entries against the
//     same load over 10 tenants, rounds interleaved, BENCH_CONCURRENCY
//     (default 32) callers, Backend within TENANTRY_DB_MAX_CONNECTIONS of
//     BENCH_MAX_CONNECTIONS (default 64), the connections PostgreSQL holds
//     for Backend sampled meanwhile, then the same rounds again once every
//     tenant of both series has been called once (the steady state, printed
//     beside the goal's figure, which stays the rounds before);
//   fleet: Backend's next version (one more migration) rolled out to every
//     tenant by FleetService.MigrateTenants, BENCH_FLEET_CONCURRENCY
//     (default 0: Platform's own choice) tenants at once per group.
// BENCH_POOLED_STOCK (default 3, as TENANTRY_POOLED_STOCK) ready slots are
// kept in each pool database; BENCH_PROVISION_PAUSE_MS (default 0) pauses
// each caller between two CreateTenant calls, as sign-ups that do not come
// back to back, giving the stock's refill room.
// --provisioning-only stops after provisioning (its figures only);
// --fleet-only goes from provisioning to the fleet migration (its figures only);
// BENCH_STATEMENTS=1 loads pg_stat_statements and prints what PostgreSQL
// spent its time on during the fleet migration (with --provisioning-only, while provisioning), by statement;
// --memory-only runs provisioning and memory only (no disk, GetEntry nor
// fleet figures). BENCH_HEAP_SNAPSHOTS=<folder> has Backend write a heap
// snapshot there after each memory read (for finding what it keeps per
// tenant; the RSS figures of such a run do not count).
// --skip-get-entry leaves out the GetEntry series, --skip-fleet the fleet
// migration (while developing); --profile profiles Backend (node
// --cpu-prof) during the GetEntry rounds and says where its CPU went in
// each series; --compare DIR[,DIR…] measures GetEntry again against the
// Backend of each other checkout, on the same tenants (its figures printed
// after this checkout's; the goals stay this checkout's). BENCH_POOL_MAX_TENANTS (default Platform's
// own, 1,000) is how many tenants a pool database takes: with fewer tenants
// than 10,000, a smaller one lays them over as many pool databases.
// BENCH_SECONDS (default 12) of GetEntry per series, in BENCH_ROUNDS
// (default 6); BENCH_EPHEMERAL=1 runs PostgreSQL without fsync.
// BENCH_PHASES=1 adds the p50 of each provisioning step, its work and its
// record apart, from what Platform logs at debug level. BENCH_PROFILE=<dir>
// profiles every service's CPU (node --cpu-prof into <dir>) and says where
// it went while provisioning.
import { createClient } from "@connectrpc/connect";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { copyFile, mkdtemp, readdir } from "node:fs/promises";
import os from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import path from "node:path";
import { parseArgs } from "node:util";
import pg from "pg";
import { EntryService } from "../gen/tenantry/backend/v1/entry_service_pb.js";
import { FleetService, MigrationOutcome } from "../gen/tenantry/platform/v1/fleet_service_pb.js";
import { Placement, PlatformService } from "../gen/tenantry/platform/v1/platform_service_pb.js";
import { createGrpcJsTransport, operatorCredentialInterceptor } from "../services/mesh/index.ts";
import { quantile, root, startBenchMesh, startBenchProcesses } from "./bench-processes.ts";
import { cpuSeconds, postgresSeconds, startCpuMeter } from "./cpu-meter.ts";
import { nowUs, summarizeProfile, type Window } from "./cpu-profile.ts";
import { driveGetEntry, summarize, type Round, type Summary, type Target } from "./get-entry-load.ts";
import { goalTable, table } from "./report.ts";

const { values: flags } = parseArgs({
  options: {
    "provisioning-only": { type: "boolean", default: false },
    "fleet-only": { type: "boolean", default: false },
    "memory-only": { type: "boolean", default: false },
    "skip-get-entry": { type: "boolean", default: false },
    "skip-fleet": { type: "boolean", default: false },
    "get-entry-only": { type: "boolean", default: false },
    profile: { type: "boolean", default: false },
    compare: { type: "string" },
  },
});
const heapSnapshots = process.env.BENCH_HEAP_SNAPSHOTS;
const tenantCount = Number(process.env.BENCH_POOLED_TENANTS ?? 10_000);
const ephemeral = process.env.BENCH_EPHEMERAL === "1";
const statements = process.env.BENCH_STATEMENTS === "1";
const seconds = Number(process.env.BENCH_SECONDS ?? 12);
const roundCount = Number(process.env.BENCH_ROUNDS ?? 6);
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 32);
const maxConnections = Number(process.env.BENCH_MAX_CONNECTIONS ?? 64);
const provisionConcurrency = Number(process.env.BENCH_PROVISION_CONCURRENCY ?? 1);
const fleetConcurrency = Number(process.env.BENCH_FLEET_CONCURRENCY ?? 0);
const poolMaxTenants = process.env.BENCH_POOL_MAX_TENANTS;
const provisionPauseMs = Number(process.env.BENCH_PROVISION_PAUSE_MS ?? 0);
const phases = process.env.BENCH_PHASES === "1";
const profileDir = process.env.BENCH_PROFILE === undefined || process.env.BENCH_PROFILE === "" ? undefined : path.resolve(process.env.BENCH_PROFILE);
const pooledStock = Number(process.env.BENCH_POOLED_STOCK ?? 3);
const fewTenants = 10;
const zipfExponent = 1.1;
const backendFile = path.join(root, "bench/backend-pooled.ts");

/** Tenant ids, numbered from 0. */
const tenantIdOf = (i: number) => `pooled-${i}`;

/** A generator of numbers in [0, 1) from a seed, the same sequence on every run (mulberry32). */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * `length` indices into `n` targets drawn from Zipf(`s`): rank k (from 1)
 * with probability ∝ k^-s, the ranks given to the targets in a shuffled
 * order, so that the busiest tenants are spread over the pool databases.
 */
function zipfOrder(n: number, s: number, length: number, seed: number): Uint32Array {
  const random = seeded(seed);
  const cdf = new Float64Array(n);
  let sum = 0;
  for (let k = 0; k < n; k++) {
    sum += (k + 1) ** -s;
    cdf[k] = sum;
  }
  const byRank = Uint32Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [byRank[i], byRank[j]] = [byRank[j]!, byRank[i]!];
  }
  const order = new Uint32Array(length);
  for (let i = 0; i < length; i++) {
    const u = random() * sum;
    let low = 0;
    let high = n - 1;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (cdf[middle]! < u) low = middle + 1;
      else high = middle;
    }
    order[i] = byRank[low]!;
  }
  return order;
}

/** What Backend says of its memory on SIGUSR2 (bench/backend-pooled.ts). */
type BackendMemory = NodeJS.MemoryUsage & { heapCommitted: number; mallocedMemory: number; spaces: Record<string, { used: number; physical: number }>; rssAnon: number; rssFile: number };

/** Ends the run early (--provisioning-only, --fleet-only, --memory-only), through the same cleanup as any other end. */
class EndedEarly extends Error {}

/** When provisioning ran, and the services' pids, for BENCH_PROFILE. */
const provisionWindow: Window = [0, 0];
const profiledPids: Record<string, number> = {};

const bench = await startBenchProcesses({ ephemeral });
try {
  if (statements) {
    const setup = new pg.Client({ connectionString: bench.database.url });
    await setup.connect();
    await setup.query("alter system set shared_preload_libraries = 'pg_stat_statements'");
    await setup.query("alter system set pg_stat_statements.track = 'all'");
    await setup.query("alter system set pg_stat_statements.track_planning = on");
    // Room for a statement per tenant (each names its own schema), so that none is evicted meanwhile.
    await setup.query("alter system set pg_stat_statements.max = 50000");
    await setup.end();
    await bench.restartDatabase();
  }
  const { privateKey, publicKey } = await generateKeyPair("EdDSA", { crv: "Ed25519" });
  const idleTimeoutMs = 1000;
  const backendEnv = (idle: number) => ({ TENANTRY_DB_MAX_CONNECTIONS: String(maxConnections), TENANTRY_DB_IDLE_TIMEOUT_MS: String(idle) });
  const mesh = await startBenchMesh(bench, {
    backendFile,
    backendArgs: ["--expose-gc"],
    env: { BENCH_PUBLIC_JWK: JSON.stringify(await exportJWK(publicKey)), ...(profileDir === undefined ? {} : { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${profileDir}` }) },
    platformEnv: { TENANTRY_DATABASE_STOCK: "0", TENANTRY_POOLED_STOCK: String(pooledStock), ...(poolMaxTenants === undefined ? {} : { TENANTRY_POOL_MAX_TENANTS: poolMaxTenants }), ...(phases ? { TENANTRY_LOG_LEVEL: "debug" } : {}) },
  });
  for (const [name, child] of Object.entries(mesh.processes)) {
    profiledPids[name] = child.pid!;
  }
  // With BENCH_PHASES=1: the durations Platform logs of each provisioning step, by step.
  const stepTimes = new Map<string, { ms: number[]; recordMs: number[] }>();
  let partialLine = "";
  if (phases) {
    mesh.processes.platform!.stdout!.on("data", (chunk: Buffer) => {
      const lines = (partialLine + chunk.toString()).split("\n");
      partialLine = lines.pop()!;
      for (const line of lines.filter((l) => l.startsWith("{") && l.includes("provisioning step done"))) {
        const { step, ms, recordMs } = JSON.parse(line) as { step: string; ms: number; recordMs: number };
        const times = stepTimes.get(step) ?? { ms: [], recordMs: [] };
        times.ms.push(ms);
        times.recordMs.push(recordMs);
        stepTimes.set(step, times);
      }
    });
  }
  const transport = createGrpcJsTransport({ address: `127.0.0.1:${mesh.ports.platform}`, interceptors: [operatorCredentialInterceptor(bench.operatorToken)] });
  const platform = createClient(PlatformService, transport);
  const fleet = createClient(FleetService, transport);
  const admin = new pg.Client({ connectionString: bench.database.url });
  await admin.connect();
  // Ended by the server's stop when the run fails: the run's own error tells.
  admin.on("error", () => undefined);
  const one = async <T>(sql: string, values: unknown[] = []) => (await admin.query<T & pg.QueryResultRow>(sql, values)).rows[0]!;
  if (statements) {
    await admin.query("create extension if not exists pg_stat_statements");
  }
  /** Sessions ever opened to the pool databases (PostgreSQL's count, flushed within a second or so). */
  const poolSessions = async () =>
    Number((await one<{ n: string }>("select coalesce(sum(sessions), 0) as n from pg_stat_database where datname like '%\\_pool\\_%'")).n);

  /**
   * PostgreSQL's time per tenant by statement since the last reset (planning and execution), the costliest
   * first: a tenant's own names (its schemas, role, application name) written with * for its number, so that
   * one statement made for every tenant counts as one; the last row is every statement together.
   */
  const statementTable = async () => {
    const rows = (
      await admin.query<{ query: string; calls: string; ms: string }>(
        `with normalized as (
           select left(regexp_replace(regexp_replace(query, '\\s+', ' ', 'g'), '(pooled[-_][0-9]+|s_[0-9a-f]{8}_|slot_[0-9a-f_]+)', '*', 'g'), 110) as query, calls, total_exec_time + total_plan_time as ms
           from pg_stat_statements)
         (select query, sum(calls) as calls, sum(ms) as ms from normalized group by query order by 3 desc limit 25)
         union all select 'all statements', sum(calls), sum(ms) from normalized`,
      )
    ).rows;
    return table(
      ["statement", "calls", "ms"],
      rows.map((r) => [r.query, (Number(r.calls) / tenantCount).toFixed(2), (Number(r.ms) / tenantCount).toFixed(3)]),
    );
  };

  /** Rolls Backend's next version out to every tenant (Backend restarted from `running` with one more migration), timed. */
  const migrateFleet = async (running: ChildProcess) => {
    process.stdout.write("fleet migration: rolling out Backend's next version…\n");
    running.kill("SIGTERM");
    await once(running, "exit");
    const backend = await mesh.startBackend(backendFile, { env: { ...backendEnv(idleTimeoutMs), BENCH_NEXT_MIGRATION: "1" } });
    if (statements) {
      await admin.query("select pg_stat_statements_reset()");
    }
    const platformPid = mesh.processes.platform!.pid!;
    const sessionsBefore = await poolSessions();
    const fleetStarted = performance.now();
    const platformCpuBefore = await cpuSeconds(platformPid);
    const meter = await startCpuMeter(backend.pid!, bench.database.pid);
    const outcomes = new Map<string, number>();
    let firstFailure = "";
    for await (const event of fleet.migrateTenants({ concurrencyPerCluster: fleetConcurrency })) {
      const name = MigrationOutcome[event.outcome];
      outcomes.set(name, (outcomes.get(name) ?? 0) + 1);
      if (event.outcome === MigrationOutcome.FAILED && firstFailure === "") {
        firstFailure = `${event.tenantId}/${event.service}: ${event.error}`;
      }
    }
    const seconds = (performance.now() - fleetStarted) / 1000;
    const cpu = { ...(await meter()), platform: (await cpuSeconds(platformPid)) - platformCpuBefore };
    // PostgreSQL counts a session as it ends or within a second or so: wait for the count to settle.
    await sleep(1500);
    const sessionsOpened = (await poolSessions()) - sessionsBefore;
    const migrated = outcomes.get("MIGRATED") ?? 0;
    const cpuMs = (s: number) => ((s * 1000) / tenantCount).toFixed(2);
    let text = `Fleet migration: one more Backend migration for ${tenantCount} tenants × 2 services in ${seconds.toFixed(1)} s (${JSON.stringify(Object.fromEntries(outcomes))})${firstFailure === "" ? "" : `\nfirst failure: ${firstFailure}`}
CPU per tenant, ms: Backend ${cpuMs(cpu.server)}, Platform ${cpuMs(cpu.platform)}, PostgreSQL ${cpuMs(cpu.postgres)}; sessions opened to the pool databases: ${sessionsOpened}`;
    if (statements) {
      text += `\nPostgreSQL statements during the fleet migration (pg_stat_statements), per tenant:\n${await statementTable()}`;
    }
    return {
      backend,
      text,
      goals: [
        { measure: "fleet migration, tenants/s", figure: migrated / seconds, shown: (migrated / seconds).toFixed(1), atLeast: 200, goal: "≥ 200" },
        { measure: "fleet migration, tenants migrated", figure: migrated, shown: `${migrated}/${tenantCount}`, atLeast: tenantCount, goal: `${tenantCount}/${tenantCount}` },
      ],
    };
  };

  // Provisioning.
  const globalBefore = Number((await one<{ size: string }>("select pg_tablespace_size('pg_global') as size")).size);
  const atOnce = provisionConcurrency === 1 ? "one after another" : `${provisionConcurrency} at once`;
  const pause = provisionPauseMs > 0 ? `, ${provisionPauseMs} ms apart per caller` : "";
  process.stdout.write(`provisioning ${tenantCount} pooled tenants ${atOnce}${pause}, a stock of ${pooledStock} slots per pool database…\n`);
  const provisioned: number[] = [];
  // CPU per tenant of each process while provisioning: back to back on two cores, their sum is what a tenant waits for.
  const cpuOf = async () => ({
    ...Object.fromEntries(await Promise.all(Object.entries(mesh.processes).map(async ([name, child]) => [name, await cpuSeconds(child.pid!)] as const))),
    postgres: await postgresSeconds(bench.database.pid),
  });
  if (statements) {
    await admin.query("select pg_stat_statements_reset()");
  }
  const cpuBefore = await cpuOf();
  let cpuMark: Record<string, number> = cpuBefore;
  const provisionStarted = performance.now();
  provisionWindow[0] = nowUs();
  let nextTenant = 0;
  await Promise.all(
    Array.from({ length: provisionConcurrency }, async () => {
      while (nextTenant < tenantCount) {
        const i = nextTenant++;
        const t0 = performance.now();
        await platform.createTenant({ tenantId: tenantIdOf(i), placement: Placement.POOLED });
        provisioned.push(performance.now() - t0);
        if (provisionPauseMs > 0) {
          await sleep(provisionPauseMs);
        }
        if (provisioned.length % 1000 === 0) {
          const last = provisioned.slice(-1000).sort((a, b) => a - b);
          // Where the CPU of the last thousand went, per tenant: what grows with the fleet, and where.
          const cpu = await cpuOf();
          // Seconds over 1,000 tenants are milliseconds per tenant.
          const perTenant = Object.entries(cpu).map(([name, seconds]) => `${name} ${(seconds - cpuMark[name]!).toFixed(1)}`);
          cpuMark = cpu;
          process.stdout.write(`  ${provisioned.length}: p50 ${quantile(last, 0.5).toFixed(1)} ms over the last 1000; CPU per tenant, ms: ${perTenant.join(", ")}\n`);
        }
      }
    }),
  );
  const provisionSeconds = (performance.now() - provisionStarted) / 1000;
  const cpuAfter = await cpuOf();
  provisionWindow[1] = nowUs();
  const byThousand = Array.from({ length: Math.ceil(tenantCount / 1000) }, (_, k) => quantile(provisioned.slice(k * 1000, (k + 1) * 1000).sort((a, b) => a - b), 0.5));
  const provisionSorted = [...provisioned].sort((a, b) => a - b);
  process.stdout.write(`  p50 ${quantile(provisionSorted, 0.5).toFixed(1)} ms, p99 ${quantile(provisionSorted, 0.99).toFixed(1)} ms, ${(tenantCount / provisionSeconds).toFixed(1)} tenants/s\n`);
  process.stdout.write(
    `  CPU per tenant, ms: ${Object.entries(cpuAfter)
      .map(([name, seconds]) => `${name} ${(((seconds - (cpuBefore as Record<string, number>)[name]!) * 1000) / tenantCount).toFixed(1)}`)
      .join(", ")}\n`,
  );
  if (phases) {
    const p50 = (values: number[]) => quantile([...values].sort((a, b) => a - b), 0.5).toFixed(1);
    process.stdout.write(
      `  per step, p50 ms (work + record): ${[...stepTimes].map(([step, t]) => `${step} ${p50(t.ms)} + ${p50(t.recordMs)}`).join(", ")}\n`,
    );
    // Each tenant logs each step it runs once, in the order they were made: its n-th thousand of lines is about the n-th thousand's.
    const thousands = (values: number[]) => Array.from({ length: Math.ceil(values.length / 1000) }, (_, k) => p50(values.slice(k * 1000, (k + 1) * 1000)));
    process.stdout.write(`  per step by thousand, p50 ms (work): ${[...stepTimes].map(([step, t]) => `${step} ${thousands(t.ms).join(" ")}`).join("; ")}\n`);
  }
  if (flags["provisioning-only"]) {
    if (statements) {
      process.stdout.write(`PostgreSQL statements while provisioning (pg_stat_statements), per tenant:\n${await statementTable()}\n`);
    }
    transport.close();
    await admin.end();
    throw new EndedEarly();
  }
  if (flags["fleet-only"]) {
    const fleetRun = await migrateFleet(mesh.backend);
    transport.close();
    await admin.end();
    process.stdout.write(`\n${fleetRun.text}\n\nGoal: fleet migration of pooled tenants\n${goalTable(fleetRun.goals)}\n`);
    throw new EndedEarly();
  }
  if (profileDir !== undefined) {
    throw new Error("BENCH_PROFILE is for --provisioning-only runs");
  }

  // Disk (not with --memory-only).
  const kb = (bytes: number) => (bytes / 1024).toFixed(1);
  const measureDisk = async () => {
    const pools = (await admin.query<{ name: string; size: string }>("select datname as name, pg_database_size(datname) as size from pg_database where datname like '%\\_pool\\_%' order by oid")).rows;
    await admin.query("create database bench_empty_pool");
    const emptySize = Number((await one<{ size: string }>("select pg_database_size('bench_empty_pool') as size")).size);
    const globalAfter = Number((await one<{ size: string }>("select pg_tablespace_size('pg_global') as size")).size);
    const poolBytes = pools.reduce((n, p) => n + Number(p.size) - emptySize, 0);
    const diskPerTenant = (poolBytes + globalAfter - globalBefore) / tenantCount;
    // Where it went, in the first pool database: the tenants' relations, the catalogs' growth.
    const first = new pg.Client({ connectionString: bench.database.urlFor(pools[0]!.name) });
    await first.connect();
    const empty = new pg.Client({ connectionString: bench.database.urlFor("bench_empty_pool") });
    await empty.connect();
    const tenantsInFirst = Number((await first.query<{ n: string }>("select count(*) as n from pg_namespace where nspname like 't\\_%\\_backend'")).rows[0]!.n);
    const relations = (
      await first.query<{ kind: string; n: string; bytes: string }>(
        `select case when c.relkind = 'i' and n.nspname = 'pg_toast' then 'toast index' when c.relkind = 'i' then 'index' when c.relkind = 't' then 'toast table' when c.relkind = 'S' then 'sequence' else 'table' end as kind,
           count(*) as n, sum(pg_relation_size(c.oid)) as bytes
         from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where c.relowner in (select oid from pg_roles where rolname like 'tenant\\_%') and c.relkind in ('r', 'i', 't', 'S', 'm')
         group by 1 order by 3 desc`,
      )
    ).rows;
    const catalogSizes = async (client: pg.Client) =>
      new Map(
        (
          await client.query<{ name: string; bytes: string }>(
            "select c.relname as name, pg_total_relation_size(c.oid) as bytes from pg_class c where c.relnamespace = 'pg_catalog'::regnamespace and c.relkind = 'r' and not c.relisshared",
          )
        ).rows.map((r) => [r.name, Number(r.bytes)]),
      );
    const [catalogsFull, catalogsEmpty] = [await catalogSizes(first), await catalogSizes(empty)];
    const catalogGrowth = [...catalogsFull].map(([name, bytes]) => ({ name, bytes: bytes - (catalogsEmpty.get(name) ?? 0) })).sort((a, b) => b.bytes - a.bytes);
    const firstSize = Number(pools[0]!.size) - emptySize;
    await first.end();
    await empty.end();
    await admin.query("drop database bench_empty_pool");
    const perFirst = (bytes: number) => kb(bytes / tenantsInFirst);
    const relationBytes = relations.reduce((n, r) => n + Number(r.bytes), 0);
    const catalogBytes = catalogGrowth.reduce((n, c) => n + c.bytes, 0);
    return { pools, emptySize, globalAfter, poolBytes, diskPerTenant, tenantsInFirst, relations, catalogGrowth, firstSize, perFirst, relationBytes, catalogBytes };
  };
  const disk = flags["memory-only"] || flags["get-entry-only"] ? undefined : await measureDisk();

  // Memory, and one entry for each tenant.
  const token = (tenantId: string) =>
    new SignJWT({ tid: tenantId, permissions: ["entries.read", "entries.write"] })
      .setProtectedHeader({ alg: "EdDSA", kid: tenantId, typ: "at+jwt" })
      .setIssuer("tenantry")
      .setSubject("user-1")
      .setIssuedAt()
      .setExpirationTime("2h")
      .sign(privateKey);
  mesh.backend.kill("SIGTERM");
  await once(mesh.backend, "exit");
  let backend = await mesh.startBackend(backendFile, { env: { ...backendEnv(idleTimeoutMs), ...(heapSnapshots === undefined ? {} : { BENCH_HEAP_SNAPSHOTS: heapSnapshots }) }, args: ["--expose-gc"] });
  const backendTransport = createGrpcJsTransport({ address: `127.0.0.1:${mesh.ports.backend}` });
  const entries = createClient(EntryService, backendTransport);
  const memory = async () => {
    const line = new Promise<BackendMemory>((resolve) => {
      const read = (chunk: Buffer) => {
        const found = /\{"memory":.*\}/.exec(chunk.toString());
        if (found !== null) {
          backend.stdout!.off("data", read);
          resolve((JSON.parse(found[0]) as { memory: BackendMemory }).memory);
        }
      };
      backend.stdout!.on("data", read);
    });
    backend.kill("SIGUSR2");
    return line;
  };
  /** Waits until the idle connections have closed (and a little more), then reads the memory: the lowest of three reads. */
  const settledMemory = async () => {
    await new Promise((resolve) => setTimeout(resolve, idleTimeoutMs * 3));
    const reads = [await memory(), await memory(), await memory()];
    return reads.reduce((low, m) => (m.heapUsed + m.external < low.heapUsed + low.external ? m : low));
  };
  const targets: Target[] = new Array(tenantCount);
  let writeErrors = 0;
  const createEntries = async (from: number, to: number) => {
    let next = from;
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next < to) {
          const i = next++;
          const tenantId = tenantIdOf(i);
          const jwt = await token(tenantId);
          const headers = { "x-tenant-id": tenantId, authorization: `Bearer ${jwt}` };
          try {
            const { entry } = await entries.createEntry({ title: `entry of ${tenantId}`, body: "x".repeat(200), tags: ["bench", "entry"] }, { headers });
            targets[i] = { tenantId, token: jwt, id: entry!.id };
          } catch (error) {
            if (writeErrors++ === 0) {
              process.stderr.write(`first CreateEntry failure: ${String(error)}\n`);
            }
          }
        }
      }),
    );
  };
  /**
   * As many CreateEntry calls as the many tenants will make, over the few
   * with their tokens, so that the memory the process keeps for its load
   * alone (code compiled and optimized, pages of the node binary touched,
   * what its allocators keep for reuse) is there in both reads, and their
   * difference is what knowing more tenants costs.
   */
  const warmUp = async (calls: number) => {
    let done = 0;
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (done < calls) {
          const target = targets[done++ % fewTenants];
          if (target === undefined) {
            continue;
          }
          const { tenantId, token: jwt } = target;
          try {
            await entries.createEntry({ title: `more of ${tenantId}`, body: "x".repeat(200), tags: ["bench", "entry"] }, { headers: { "x-tenant-id": tenantId, authorization: `Bearer ${jwt}` } });
          } catch (error) {
            if (writeErrors++ === 0) {
              process.stderr.write(`first CreateEntry failure: ${String(error)}\n`);
            }
          }
        }
      }),
    );
  };
  process.stdout.write(`one entry for each of ${fewTenants} tenants, then ${tenantCount - fewTenants} more over them…\n`);
  await createEntries(0, fewTenants);
  // --get-entry-only: the entries without the memory reads (nor the warm-up they need).
  const quick = flags["get-entry-only"];
  const memoryCold = quick ? undefined : await settledMemory();
  if (!quick) {
    await warmUp(tenantCount - fewTenants);
  }
  const memoryBefore = quick ? undefined : await settledMemory();
  process.stdout.write(`one entry for each of ${tenantCount - fewTenants} more…\n`);
  await createEntries(fewTenants, tenantCount);
  const memoryAfter = quick ? undefined : await settledMemory();
  const memoryFigures = quick ? undefined : memoryFiguresOf(memoryCold!, memoryBefore!, memoryAfter!);
  if (memoryFigures !== undefined && flags["memory-only"]) {
    transport.close();
    backendTransport.close();
    await admin.end();
    const errors = { measure: "CreateEntry errors", figure: writeErrors, shown: String(writeErrors), atMost: 0, goal: "0" };
    process.stdout.write(`\n${memoryFigures.memoryTitle}\n${memoryFigures.memoryTable}\n\nGoal: pooled placement at scale, memory\n${goalTable([...memoryFigures.memoryGoals, errors])}\n`);
    throw new EndedEarly();
  }
  function memoryFiguresOf(memoryCold: BackendMemory, memoryBefore: BackendMemory, memoryAfter: BackendMemory) {
  const known = tenantCount - fewTenants;
  const jsPerTenant = (memoryAfter.heapUsed + memoryAfter.external - memoryBefore.heapUsed - memoryBefore.external) / 1024 / known;
  const rssPerTenant = (memoryAfter.rss - memoryBefore.rss) / 1024 / known;
  // Against the process before the warm-up: what knowing more tenants and the load of their calls cost together.
  const rssPerTenantCold = (memoryAfter.rss - memoryCold.rss) / 1024 / known;
  const jsPerTenantCold = (memoryAfter.heapUsed + memoryAfter.external - memoryCold.heapUsed - memoryCold.external) / 1024 / known;
  const memoryTable = table(
    ["", "RSS MB", "of it anonymous MB", "heap used MB", "external MB", "heap resident MB", "of it young MB", "malloc (V8) MB"],
    [
      [`knowing ${fewTenants} tenants, after ${fewTenants} calls`, memoryCold] as const,
      [`knowing ${fewTenants} tenants, after ${tenantCount} calls`, memoryBefore] as const,
      [`knowing ${tenantCount} tenants`, memoryAfter] as const,
    ].map(([name, m]) => [name, ...[m.rss, m.rssAnon, m.heapUsed, m.external, m.heapCommitted, m.spaces.new_space?.physical ?? 0, m.mallocedMemory].map((b) => (b / 2 ** 20).toFixed(1))]),
  );
  const memoryGoals = [
    { measure: "JavaScript memory (heap and external) per known idle tenant, KB", figure: jsPerTenant, shown: jsPerTenant.toFixed(2), atMost: 10, goal: "≤ 10" },
    { measure: "resident memory (RSS) per known idle tenant, KB", figure: rssPerTenant, shown: rssPerTenant.toFixed(2), atMost: 10, goal: "≤ 10" },
  ];
  const memoryTitle = `Backend knowing ${tenantCount} pooled tenants (one CreateEntry each, tokens verified, ${maxConnections} connections, closed as idle), memory after garbage collection; per tenant against the process knowing ${fewTenants} after as many calls (against it after ${fewTenants} calls: JavaScript ${jsPerTenantCold.toFixed(2)} KB, RSS ${rssPerTenantCold.toFixed(2)} KB)`;
    return { memoryTitle, memoryTable, memoryGoals };
  }

  // GetEntry, Zipf(1.1) over all tenants and over 10: this checkout's Backend, then each compared one's.
  backend.kill("SIGTERM");
  await once(backend, "exit");
  const all = targets.filter((t) => t !== undefined);
  const few = all.slice(0, fewTenants);
  const orders = [zipfOrder(all.length, zipfExponent, 1 << 20, 1), zipfOrder(few.length, zipfExponent, 1 << 16, 2)] as const;
  const distinct = new Set(orders[0]).size;
  /** Backend's server processes now: each one's pool database and CPU time so far (seconds), by pid. */
  const backendProcesses = async () => {
    const rows = (await admin.query<{ pid: number; db: string }>("select pid, datname as db from pg_stat_activity where application_name like 'tenantry-backend%'")).rows;
    const processes = new Map<number, { db: string; cpu: number }>();
    for (const { pid, db } of rows) {
      const cpu = await cpuSeconds(pid).catch(() => undefined);
      if (cpu !== undefined) {
        processes.set(pid, { db, cpu });
      }
    }
    return processes;
  };
  /**
   * PostgreSQL's statements so far (pg_stat_statements, BENCH_STATEMENTS=1),
   * a tenant's own names written with * so that a statement made for every
   * tenant counts as one.
   */
  const statementTotals = async () => {
    if (!statements) {
      return new Map<string, { calls: number; plans: number; planMs: number; execMs: number }>();
    }
    const rows = (
      await admin.query<{ query: string; calls: string; plans: string; plan_ms: string; exec_ms: string }>(
        `select left(regexp_replace(regexp_replace(query, '\\s+', ' ', 'g'), 'pooled[-_][0-9]+', '*', 'g'), 100) as query,
           sum(calls) as calls, sum(plans) as plans, sum(total_plan_time) as plan_ms, sum(total_exec_time) as exec_ms
         from pg_stat_statements group by 1`,
      )
    ).rows;
    return new Map(rows.map((r) => [r.query, { calls: Number(r.calls), plans: Number(r.plans), planMs: Number(r.plan_ms), execMs: Number(r.exec_ms) }]));
  };
  /** What PostgreSQL did for one series over its rounds: its server processes' CPU and its statements. */
  class PostgresLook {
    /** CPU seconds of Backend's server processes, by pool database. */
    readonly cpuByDatabase = new Map<string, number>();
    /** Server processes that used CPU, by pool database (a process counted once). */
    readonly processesByDatabase = new Map<string, Set<number>>();
    readonly statements = new Map<string, { calls: number; plans: number; planMs: number; execMs: number }>();
    /** Tenants each server process was seen serving (sampled every 100 ms). */
    readonly tenantsByProcess = new Map<number, Set<string>>();
    async start() {
      const [processes, totals] = [await backendProcesses(), await statementTotals()];
      return async () => {
        const [after, totalsAfter] = [await backendProcesses(), await statementTotals()];
        for (const [pid, { db, cpu }] of after) {
          const used = cpu - (processes.get(pid)?.cpu ?? 0);
          if (used > 0) {
            this.cpuByDatabase.set(db, (this.cpuByDatabase.get(db) ?? 0) + used);
            const set = this.processesByDatabase.get(db) ?? new Set<number>();
            set.add(pid);
            this.processesByDatabase.set(db, set);
          }
        }
        for (const [query, t] of totalsAfter) {
          const b = totals.get(query) ?? { calls: 0, plans: 0, planMs: 0, execMs: 0 };
          const sum = this.statements.get(query) ?? { calls: 0, plans: 0, planMs: 0, execMs: 0 };
          this.statements.set(query, { calls: sum.calls + t.calls - b.calls, plans: sum.plans + t.plans - b.plans, planMs: sum.planMs + t.planMs - b.planMs, execMs: sum.execMs + t.execMs - b.execMs });
        }
      };
    }
    async sample() {
      const rows = (await admin.query<{ pid: number; name: string }>("select pid, application_name as name from pg_stat_activity where application_name like 'tenantry-backend%'")).rows;
      for (const { pid, name } of rows) {
        const set = this.tenantsByProcess.get(pid) ?? new Set<string>();
        set.add(name);
        this.tenantsByProcess.set(pid, set);
      }
      return rows.length;
    }
    report(calls: number): string {
      const perCall = (value: number) => ((value * 1000) / calls).toFixed(3);
      const databases = [...this.cpuByDatabase].sort(([a], [b]) => a.localeCompare(b));
      const cpu = databases.reduce((n, [, c]) => n + c, 0);
      const tenantsSeen = [...this.tenantsByProcess.values()].map((t) => t.size).sort((a, b) => a - b);
      const lines = [
        `  Backend's server processes: ${perCall(cpu)} ms CPU/call, in ${databases.length} pool databases (processes that worked, per database: ${databases.map(([db]) => this.processesByDatabase.get(db)!.size).join(" ")}; share of CPU: ${databases.map(([, c]) => ((100 * c) / cpu).toFixed(0)).join(" ")} %); tenants seen per process (sampled), median ${tenantsSeen[Math.floor(tenantsSeen.length / 2)] ?? 0}, max ${tenantsSeen.at(-1) ?? 0}`,
      ];
      if (this.statements.size > 0) {
        const rows = [...this.statements].filter(([, t]) => t.calls > 0).sort(([, a], [, b]) => b.planMs + b.execMs - a.planMs - a.execMs).slice(0, 8);
        lines.push(
          table(
            ["statement", "calls/call", "plans/call", "plan ms/call", "exec ms/call"],
            rows.map(([query, t]) => [query, (t.calls / calls).toFixed(2), (t.plans / calls).toFixed(2), perCall(t.planMs / 1000), perCall(t.execMs / 1000)]),
          ),
        );
      }
      return lines.join("\n");
    }
  }
  /** Both series against the Backend of `file`, started afresh and stopped after; their figures and their report. */
  const measureGetEntry = async (file: string, title: string) => {
    const profileDir = flags.profile ? await mkdtemp(path.join(os.tmpdir(), "tenantry-pooled-profile-")) : "";
    const server = await mesh.startBackend(file, { env: backendEnv(120_000), ...(flags.profile ? { args: ["--cpu-prof", `--cpu-prof-dir=${profileDir}`] } : {}) });
    const series = [
      { name: `Zipf(${zipfExponent}) over ${all.length} pooled tenants`, targets: all, order: orders[0], rounds: [] as Round[], steady: [] as Round[], opened: 0, windows: [] as Window[], postgres: new PostgresLook() },
      { name: `Zipf(${zipfExponent}) over ${few.length} pooled tenants`, targets: few, order: orders[1], rounds: [] as Round[], steady: [] as Round[], opened: 0, windows: [] as Window[], postgres: new PostgresLook() },
    ];
    let peakConnections = 0;
    const drive = (s: (typeof series)[number], duration: number) =>
      driveGetEntry(`127.0.0.1:${mesh.ports.backend}`, { targets: s.targets, order: s.order, concurrency, duration, serverPid: server.pid!, postmasterPid: bench.database.pid });
    process.stdout.write(`GetEntry, ${title}: warming up…\n`);
    for (const s of flags["skip-get-entry"] ? [] : series) {
      await drive(s, 3);
    }
    /** Interleaved rounds of both series, each kept in `rounds` or `steady`. */
    const runRounds = async (into: "rounds" | "steady") => {
      for (let round = 0; round < (flags["skip-get-entry"] ? 0 : roundCount); round++) {
        process.stdout.write(`GetEntry${into === "steady" ? ", steady state" : ""}: round ${round + 1}/${roundCount}…\n`);
        for (let i = 0; i < series.length; i++) {
          const s = series[(round + i) % series.length]!;
          let sampling = true;
          const sampler = (async () => {
            while (sampling) {
              peakConnections = Math.max(peakConnections, await s.postgres.sample());
              await new Promise((resolve) => setTimeout(resolve, 100));
            }
          })();
          const sessionsBefore = await poolSessions();
          const looked = into === "rounds" ? await s.postgres.start() : undefined;
          const from = nowUs();
          s[into].push(await drive(s, seconds / roundCount));
          sampling = false;
          await sampler;
          await looked?.();
          if (into === "rounds") {
            s.windows.push([from, nowUs()]);
            s.opened += (await poolSessions()) - sessionsBefore;
          }
        }
      }
    };
    await runRounds("rounds");
    // The steady state: the same rounds again once Backend has served every tenant of both series at least once.
    if (!flags["skip-get-entry"]) {
      process.stdout.write("GetEntry: one call for every tenant…\n");
      for (const s of series) {
        // Round-robin, each tenant once (first calls cost more than the rounds' rate says: the time is a backstop).
        const everyOnce = await driveGetEntry(`127.0.0.1:${mesh.ports.backend}`, {
          targets: s.targets,
          concurrency,
          calls: s.targets.length,
          duration: 600,
          serverPid: server.pid!,
          postmasterPid: bench.database.pid,
        });
        if (everyOnce.calls < s.targets.length) {
          process.stderr.write(`${s.name}: only ${everyOnce.calls} of ${s.targets.length} tenants called before the steady-state rounds\n`);
        }
      }
      await runRounds("steady");
    }
    // Node writes the CPU profile when Backend exits.
    server.kill("SIGTERM");
    await once(server, "exit");
    const none = { calls: 1, errors: 0, latencies: [0], seconds: 1, cpu: { server: 0, postgres: 0, client: 0, others: 0, serverReads: 0, serverWrites: 0 } };
    const [many, tenOnly] = series.map((s) => summarize(s.rounds.length === 0 ? [none] : s.rounds)) as [Summary, Summary];
    /** Many / 10, round by round, in the order the rounds ran. */
    const roundRatios = series[0]!.rounds.map((r, i) => r.calls / r.seconds / (series[1]!.rounds[i]!.calls / series[1]!.rounds[i]!.seconds));
    const ratio = [...roundRatios].sort((a, b) => a - b)[Math.floor(roundRatios.length / 2)] ?? 0;
    const steadyRatios = series[0]!.steady.map((r, i) => r.calls / r.seconds / (series[1]!.steady[i]!.calls / series[1]!.steady[i]!.seconds));
    const steadyRatio = [...steadyRatios].sort((a, b) => a - b)[Math.floor(steadyRatios.length / 2)] ?? 0;
    const [manySteady, tenSteady] = series.map((s) => (s.steady.length === 0 ? undefined : summarize(s.steady)));
    let profiles = "";
    if (flags.profile) {
      const [profile] = await readdir(profileDir);
      const kept = path.join(os.tmpdir(), `tenantry-pooled-${new Date().toISOString().replace(/[:.]/g, "-")}.cpuprofile`);
      await copyFile(path.join(profileDir, profile!), kept);
      for (const s of series) {
        profiles += `\nBackend's CPU profile during the rounds of ${s.name} (${kept}):\n${await summarizeProfile(kept, s.windows, root)}`;
      }
    }
    const errors = many.errors + tenOnly.errors + (manySteady?.errors ?? 0) + (tenSteady?.errors ?? 0);
    const report = `GetEntry over gRPC, ${title}: ${concurrency} callers, ${roundCount} interleaved rounds, ${seconds} s per series; Backend's connections at most ${maxConnections} (at most 8 per pool database)
${table(
  ["series", "req/s", "p50 ms", "p99 ms", "errors", "Backend CPU ms/call", "PostgreSQL ms/call", "connections opened"],
  [
    [series[0]!.name, many.rps.toFixed(0), many.p50.toFixed(2), many.p99.toFixed(2), String(many.errors), many.cpuPerCall.toFixed(3), many.postgresPerCall.toFixed(3), String(series[0]!.opened)],
    [series[1]!.name, tenOnly.rps.toFixed(0), tenOnly.p50.toFixed(2), tenOnly.p99.toFixed(2), String(tenOnly.errors), tenOnly.cpuPerCall.toFixed(3), tenOnly.postgresPerCall.toFixed(3), String(series[1]!.opened)],
  ],
)}
many / 10, median of the rounds: ${ratio.toFixed(3)}; round by round in the order they ran: ${roundRatios.map((r) => r.toFixed(2)).join(" ")}; ${distinct} distinct tenants in the Zipf sequence of the many; Backend's connections seen at most: ${peakConnections}
PostgreSQL during the rounds of ${series[0]!.name}:
${series[0]!.postgres.report(many.calls)}
PostgreSQL during the rounds of ${series[1]!.name}:
${series[1]!.postgres.report(tenOnly.calls)}
${
  manySteady === undefined || tenSteady === undefined
    ? ""
    : `Steady state, the same rounds again after one call for every tenant of both series (not the goal's figure, which is the rounds above): ${manySteady.rps.toFixed(0)} vs ${tenSteady.rps.toFixed(0)} req/s, Backend CPU ${manySteady.cpuPerCall.toFixed(3)} vs ${tenSteady.cpuPerCall.toFixed(3)} ms/call, PostgreSQL ${manySteady.postgresPerCall.toFixed(3)} vs ${tenSteady.postgresPerCall.toFixed(3)} ms/call, errors ${manySteady.errors + tenSteady.errors}; many / 10 median ${steadyRatio.toFixed(3)}, round by round ${steadyRatios.map((r) => r.toFixed(2)).join(" ")}
`
}${profiles}`;
    return { ratio, errors, peakConnections, report };
  };
  const getEntry = await measureGetEntry(backendFile, "this checkout");
  const compared = [];
  for (const dir of flags.compare?.split(",") ?? []) {
    compared.push(await measureGetEntry(path.resolve(dir, "bench/backend-pooled.ts"), `the Backend of ${dir}`));
  }
  const getEntryGoals = [
    { measure: `GetEntry throughput, ${all.length} tenants / ${few.length}, median of the rounds`, figure: getEntry.ratio, shown: getEntry.ratio.toFixed(3), atLeast: 0.8, goal: "≥ 0.80" },
    { measure: "GetEntry errors (both series, steady state included) and CreateEntry errors", figure: getEntry.errors + writeErrors, shown: String(getEntry.errors + writeErrors), atMost: 0, goal: "0" },
    { measure: "Backend's connections at most", figure: getEntry.peakConnections, shown: String(getEntry.peakConnections), atMost: maxConnections, goal: `≤ ${maxConnections}` },
  ];
  if (memoryFigures === undefined || disk === undefined) {
    transport.close();
    backendTransport.close();
    await admin.end();
    process.stdout.write(`\n${[getEntry, ...compared].map((g) => g.report).join("\n")}\nGoal: pooled placement at scale, GetEntry\n${goalTable(getEntryGoals)}\n`);
    throw new EndedEarly();
  }
  const { memoryTitle, memoryTable, memoryGoals } = memoryFigures;
  const { pools, emptySize, globalAfter, poolBytes, diskPerTenant, tenantsInFirst, relations, catalogGrowth, firstSize, perFirst, relationBytes, catalogBytes } = disk;
  backend = await mesh.startBackend(backendFile, { env: backendEnv(idleTimeoutMs) });

  const fleetRun = flags["skip-fleet"] ? undefined : await migrateFleet(backend);
  transport.close();
  backendTransport.close();
  await admin.end();

  const ms = (value: number) => value.toFixed(1);
  const storage = ephemeral ? "PostgreSQL without fsync" : "durable PostgreSQL";
  process.stdout.write(`
Pooled provisioning: ${tenantCount} tenants through CreateTenant ${atOnce} (${storage} on this machine), ${pools.length} pool databases
${table(
  ["what", "p50 ms", "p99 ms"],
  [["CreateTenant, pooled", ms(quantile(provisionSorted, 0.5)), ms(quantile(provisionSorted, 0.99))]],
)}
p50 by thousand tenants, ms: ${byThousand.map(ms).join(" ")}; ${(tenantCount / provisionSeconds).toFixed(1)} tenants/s

Disk per pooled tenant: pool databases grew by ${kb(poolBytes / tenantCount)} KB per tenant (${pools.length} databases, an empty one ${kb(emptySize)} KB left out), shared catalogs (roles) by ${kb((globalAfter - globalBefore) / tenantCount)} KB
In ${pools[0]!.name} (${tenantsInFirst} tenants, ${perFirst(firstSize)} KB each):
${table(
  ["what, per tenant", "count", "KB"],
  [
    ...relations.map((r) => [r.kind, (Number(r.n) / tenantsInFirst).toFixed(0), perFirst(Number(r.bytes))]),
    ["all the tenant's relations", "", perFirst(relationBytes)],
    ...catalogGrowth.slice(0, 6).map((c) => [`  catalog ${c.name}`, "", perFirst(c.bytes)]),
    ["catalogs (pg_catalog) in all", "", perFirst(catalogBytes)],
    ["the rest (free space map, visibility map, WAL-less pages)", "", perFirst(firstSize - relationBytes - catalogBytes)],
  ],
)}

${memoryTitle}
${memoryTable}

${[getEntry, ...compared].map((g) => g.report).join("\n")}
${fleetRun?.text ?? "(fleet migration skipped)"}

Goal: pooled placement at scale
${goalTable([
  { measure: `CreateTenant p50, pooled, ms (${ephemeral ? "without fsync: the goal is for durable storage" : "durable storage"})`, figure: quantile(provisionSorted, 0.5), shown: ms(quantile(provisionSorted, 0.5)), atMost: 30, goal: "≤ 30" },
  { measure: "disk per pooled tenant, KB", figure: diskPerTenant / 1024, shown: kb(diskPerTenant), atMost: 200, goal: "≤ 200" },
  ...memoryGoals,
  ...getEntryGoals,
  ...(fleetRun?.goals ?? []),
])}
`);
} catch (error) {
  if (!(error instanceof EndedEarly)) {
    throw error;
  }
} finally {
  await bench.stop();
}
if (profileDir !== undefined) {
  // One profile per process, written as each exited: the services' (their pids name them) and npm's, if any.
  for (const [name, child] of Object.entries(profiledPids)) {
    const file = (await readdir(profileDir)).find((f) => f.includes(`.${child}.`));
    if (file !== undefined) {
      process.stdout.write(`\nCPU of ${name} while provisioning: ${await summarizeProfile(path.join(profileDir, file), [provisionWindow], root, { packages: 12, functions: 20 })}`);
    }
  }
}
