// npm run bench:backup: Tenantry's backups and restores against pg_dump -Fc
// and pg_restore, side by side on the same ~100 MB dedicated tenant, in one run:
// backup time and size, restore time (as a clone and in place, against
// pg_restore into a new database; a restore loads over two connections, so
// also against pg_restore -j 2), and GetEntry throughput of other tenants
// while backups run against without. pg_dump must be of the server's major,
// so PostgreSQL here is Debian's (BENCH_PG_BIN, default
// /usr/lib/postgresql/15/bin, must hold postgres, initdb, pg_dump and
// pg_restore), not the embedded one. Rounds alternate which side goes
// first; figures are medians. BENCH_ROUNDS (default 5), BENCH_ENTRIES
// (default 100000: ~100 MB), BENCH_LOAD_ROUNDS (default 8 pairs of GetEntry
// rounds, with and without backups), BENCH_SECONDS (default 3, per GetEntry
// round), BENCH_CONCURRENCY (default 16), BENCH_BACKUP_MAX_RATE (Platform's
// TENANTRY_BACKUP_MAX_RATE, its default unless set), BENCH_DATABASE_STOCK
// (Platform's TENANTRY_DATABASE_STOCK, default 3 as deployed; 0 has every
// restore create and migrate its database), BENCH_EPHEMERAL=1 runs
// PostgreSQL without fsync, BENCH_PHASES=1 also prints where each restore's
// time goes (its steps, and the parts of its load) and pg_restore's
// sections timed one by one.
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { spawn } from "node:child_process";
import { access, constants, readdir, readFile, rm, stat } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { AuthService } from "../gen/tenantry/auth/v1/auth_service_pb.js";
import { EntryService } from "../gen/tenantry/backend/v1/entry_service_pb.js";
import { BackupService } from "../gen/tenantry/platform/v1/backup_service_pb.js";
import { Placement, PlatformService } from "../gen/tenantry/platform/v1/platform_service_pb.js";
import { createGrpcJsTransport, operatorCredentialInterceptor } from "../services/mesh/index.ts";
import { fillTenant, words } from "./backup-tenant.ts";
import { startBenchMesh, startBenchProcesses } from "./bench-processes.ts";
import { cpuSeconds, startCpuMeter, type CpuUse } from "./cpu-meter.ts";
import { driveGetEntry, summarize, type Round, type Target } from "./get-entry-load.ts";
import { goalTable, table } from "./report.ts";

const pgBin = process.env.BENCH_PG_BIN ?? "/usr/lib/postgresql/15/bin";
const rounds = Number(process.env.BENCH_ROUNDS ?? 5);
const entryCount = Number(process.env.BENCH_ENTRIES ?? 100_000);
const loadRounds = Number(process.env.BENCH_LOAD_ROUNDS ?? 8);
const seconds = Number(process.env.BENCH_SECONDS ?? 3);
const backupRate = process.env.BENCH_BACKUP_MAX_RATE;
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 16);
const ephemeral = process.env.BENCH_EPHEMERAL === "1";
const phases = process.env.BENCH_PHASES === "1";
/** Platform's TENANTRY_DATABASE_STOCK (its default, 3); 0 has every restore create its database. */
const stockSize = Number(process.env.BENCH_DATABASE_STOCK ?? 3);
const otherTenants = 20;
const userCount = 20_000;
const password = "bench-password";

const programs = ["postgres", "initdb", "pg_dump", "pg_restore"];
const missing: string[] = [];
for (const program of programs) {
  await access(path.join(pgBin, program), constants.X_OK).catch(() => missing.push(program));
}
if (missing.length > 0) {
  process.stderr.write(`bench:backup compares with pg_dump and pg_restore of the server's own major, and ${pgBin} lacks ${missing.join(", ")}.
On Debian 12, as root: apt-get update && apt-get install -y postgresql-15 postgresql-client-15
Elsewhere, set BENCH_PG_BIN to the bin/ folder of a PostgreSQL installation that has all of ${programs.join(", ")}.
`);
  process.exit(1);
}

/** Runs a program to its end; rejects with its error output when it fails. */
function run(program: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(path.join(pgBin, program), args, { stdio: ["ignore", "ignore", "pipe"] });
    let errors = "";
    child.stderr.on("data", (chunk) => (errors += chunk));
    child.on("error", reject);
    child.on("close", (code) => (code === 0 ? resolve() : reject(new Error(`${program} exited with ${code}: ${errors.trim()}`))));
  });
}

/** How long `work` takes, in seconds. */
async function timed(work: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await work();
  return (performance.now() - started) / 1000;
}

/** CPU seconds of a process's threads so far: those at its priority, and those niced (Platform's compression threads). */
async function platformThreadSeconds(pid: number): Promise<{ normal: number; niced: number }> {
  const use = { normal: 0, niced: 0 };
  for (const thread of await readdir(`/proc/${pid}/task`)) {
    const stat = await readFile(`/proc/${pid}/task/${thread}/stat`, "utf8").catch(() => undefined);
    const fields = stat?.split(") ")[1]?.split(" ");
    if (fields !== undefined) {
      use[Number(fields[16]) > 0 ? "niced" : "normal"] += (Number(fields[11]) + Number(fields[12])) / 100;
    }
  }
  return use;
}

/** Cores kept busy on average over rounds by one of {@link CpuUse}'s parts. */
function cores(rounds: Round[], who: keyof CpuUse): string {
  return (rounds.reduce((n, r) => n + r.cpu[who], 0) / rounds.reduce((n, r) => n + r.seconds, 0)).toFixed(2);
}

/** The figure of the middle round. */
function median(values: number[]): number {
  const sorted = values.toSorted((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

const bench = await startBenchProcesses({ ephemeral, installDir: path.dirname(pgBin) });
try {
  const admin = new pg.Client({ connectionString: bench.database.url });
  await admin.connect();
  const { rows: versionRows } = await admin.query<{ version: string }>("select current_setting('server_version') as version");
  const serverVersion = versionRows[0]!.version;

  const mesh = await startBenchMesh(bench, {
    platformEnv: {
      TENANTRY_LOG_LEVEL: phases ? "debug" : "error",
      // As deployed: a stock of ready databases (bench meshes keep none unless asked).
      TENANTRY_DATABASE_STOCK: String(stockSize),
      ...(backupRate === undefined ? {} : { TENANTRY_BACKUP_MAX_RATE: backupRate }),
    },
  });
  // With BENCH_PHASES=1: the durations Platform logs of a restore's steps and of the parts of its load, since last read.
  let phaseLines = "";
  mesh.processes.platform!.stdout!.on("data", (chunk) => (phaseLines += chunk));
  const takePhases = () => {
    const parts = phaseLines
      .split("\n")
      .filter((line) => line.startsWith("{"))
      .map((line) => JSON.parse(line) as { msg?: string; step?: string; part?: string; ms?: number })
      .filter((line) => line.msg === "restore step done" || line.msg === "restore load part done")
      .map((line) => `${line.step ?? line.part} ${line.ms} ms`);
    phaseLines = "";
    return parts.join(", ");
  };
  const platformTransport = createGrpcJsTransport({ address: `127.0.0.1:${mesh.ports.platform}`, interceptors: [operatorCredentialInterceptor(bench.operatorToken)] });
  const platform = createClient(PlatformService, platformTransport);
  const backups = createClient(BackupService, platformTransport);
  const authTransport = createGrpcJsTransport({ address: `127.0.0.1:${mesh.ports.auth}` });
  const auth = createClient(AuthService, authTransport);
  const backendTransport = createGrpcJsTransport({ address: `127.0.0.1:${mesh.ports.backend}` });
  const entries = createClient(EntryService, backendTransport);

  /**
   * Creates a tenant, asking again while Platform answers UNAVAILABLE: just
   * started, it may not reach the services yet (its stock asks them for
   * their versions as soon as it starts, before they listen).
   */
  const createTenant = async (tenantId: string) => {
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        return await platform.createTenant({ tenantId, placement: Placement.DEDICATED, ownerEmail: "owner@example.com", ownerPassword: password });
      } catch (error) {
        if (ConnectError.from(error).code !== Code.Unavailable || Date.now() > deadline) {
          throw error;
        }
        await sleep(200);
      }
    }
  };

  // The tenant backed up: its owner through Platform, the rest loaded straight into its database.
  const tenantId = "big";
  process.stdout.write(`loading ${entryCount} entries and ${userCount} users into tenant "${tenantId}"…\n`);
  await createTenant(tenantId);
  const databaseOf = async (id: string) => (await platform.getTenant({ tenantId: id })).tenant!.database;
  const fillStarted = performance.now();
  {
    const tenantDb = new pg.Client({ connectionString: bench.database.urlFor(await databaseOf(tenantId)) });
    await tenantDb.connect();
    await fillTenant(tenantDb, { entries: entryCount, users: userCount, passwordOf: "owner@example.com" });
    await tenantDb.end();
  }
  const { rows: sizeRows } = await admin.query<{ bytes: string }>("select pg_database_size($1) as bytes", [await databaseOf(tenantId)]);
  const databaseMb = Number(sizeRows[0]!.bytes) / 1e6;
  process.stdout.write(`tenant "${tenantId}": ${databaseMb.toFixed(0)} MB, loaded in ${((performance.now() - fillStarted) / 1000).toFixed(1)} s\n`);

  // Other tenants, read while backups of "big" run.
  const targets: Target[] = [];
  for (let i = 0; i < otherTenants; i++) {
    const id = `other-${i}`;
    await createTenant(id);
    const { accessToken: token } = await auth.login({ email: "owner@example.com", password }, { headers: { "x-tenant-id": id } });
    const { entry } = await entries.createEntry({ title: `entry of ${id}`, body: words(60), tags: ["bench"] }, { headers: { "x-tenant-id": id, authorization: `Bearer ${token}` } });
    targets.push({ tenantId: id, token, id: entry!.id });
  }

  /**
   * Waits for the cluster's stock of ready databases to be whole again (a
   * clone or restore may have taken one; provisioning refills it behind
   * them), then flushes what earlier rounds wrote: no round pays for another's
   * refill or checkpoint.
   */
  const settle = async () => {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const { rows } = await admin.query<{ ready: number; building: number }>(
        "select count(*) filter (where datname !~ '_b$')::int as ready, count(*) filter (where datname ~ '_b$')::int as building from pg_database where starts_with(datname, 'tenantry_platform_stock_')",
      );
      if ((rows[0]!.ready >= stockSize && rows[0]!.building === 0) || Date.now() > deadline) {
        break;
      }
      await sleep(50);
    }
    await admin.query("checkpoint");
  };
  const dumpFile = path.join(bench.dir, "tenant.dump");
  const figures = { dump: [] as number[], dumpFast: [] as number[], backup: [] as number[], pgRestore: [] as number[], pgRestoreJobs: [] as number[], pgRestoreReady: [] as number[], analyze: [] as number[], clone: [] as number[], inPlace: [] as number[], dumpBytes: 0, dumpFastBytes: 0, backupBytes: 0 };
  process.stdout.write(`${rounds} rounds of backups and restores…\n`);
  for (let round = 0; round < rounds; round++) {
    const database = await databaseOf(tenantId);
    const dump = async () => {
      await settle();
      figures.dump.push(await timed(() => run("pg_dump", ["-Fc", "-f", dumpFile, "-d", bench.database.urlFor(database)])));
      figures.dumpBytes = (await stat(dumpFile)).size;
    };
    // For reference: pg_dump at the fastest gzip level (1; pg_dump's default is 6), as backups use zstd's fastest.
    const dumpFast = async () => {
      await settle();
      figures.dumpFast.push(await timed(() => run("pg_dump", ["-Fc", "-Z1", "-f", `${dumpFile}.z1`, "-d", bench.database.urlFor(database)])));
      figures.dumpFastBytes = (await stat(`${dumpFile}.z1`)).size;
      await rm(`${dumpFile}.z1`);
    };
    let backupId = "";
    const backup = async () => {
      await settle();
      let size = 0n;
      figures.backup.push(
        await timed(async () => {
          const { backup: taken } = await backups.createBackup({ tenantId, label: `round ${round}` });
          backupId = taken!.backupId;
          size = taken!.sizeBytes;
        }),
      );
      figures.backupBytes = Number(size);
    };
    const restored = `pg_restored_${round}`;
    const pgRestore = async () => {
      await settle();
      figures.pgRestore.push(
        await timed(async () => {
          await admin.query(`create database ${restored}`);
          await run("pg_restore", ["-d", bench.database.urlFor(restored), dumpFile]);
        }),
      );
      // For reference: the ANALYZE a restore does of the tables it loaded before the tenant is served, which pg_restore leaves to be done.
      const restoredDb = new pg.Client({ connectionString: bench.database.urlFor(restored) });
      await restoredDb.connect();
      const { rows: tables } = await restoredDb.query<{ name: string }>("select format('%I.%I', schemaname, tablename) as name from pg_tables where schemaname in ('auth', 'backend')");
      figures.analyze.push(await timed(() => restoredDb.query(`analyze ${tables.map((t) => t.name).join(", ")}`)));
      await restoredDb.end();
    };
    // For reference: pg_restore into a database made beforehand, as a restore into a database of the stock.
    const pgRestoreReady = async () => {
      await admin.query(`create database ${restored}_ready`);
      await settle();
      figures.pgRestoreReady.push(await timed(() => run("pg_restore", ["-d", bench.database.urlFor(`${restored}_ready`), dumpFile])));
      await admin.query(`drop database ${restored}_ready`);
    };
    // For reference: pg_restore with two jobs, as a restore loads over two connections.
    const pgRestoreJobs = async () => {
      await settle();
      figures.pgRestoreJobs.push(
        await timed(async () => {
          await admin.query(`create database ${restored}_j2`);
          await run("pg_restore", ["-j", "2", "-d", bench.database.urlFor(`${restored}_j2`), dumpFile]);
        }),
      );
      await admin.query(`drop database ${restored}_j2`);
    };
    const clone = async () => {
      await settle();
      takePhases();
      const used = phases ? await startCpuMeter(mesh.processes.platform!.pid!, bench.database.pid) : undefined;
      figures.clone.push(await timed(() => backups.restoreBackup({ backupId, targetTenantId: `clone-${round}` })));
      if (used !== undefined) {
        const cpu = await used();
        process.stdout.write(`  clone (CPU: Platform ${cpu.server.toFixed(2)} s, PostgreSQL ${cpu.postgres.toFixed(2)} s): ${takePhases()}\n`);
      }
    };
    // With BENCH_PHASES=1: pg_restore's sections one by one (schema, data, then indexes and keys), then ANALYZE.
    const pgRestoreSections = async () => {
      const target = `${restored}_sections`;
      await settle();
      await admin.query(`create database ${target}`);
      const times = [];
      for (const section of ["pre-data", "data", "post-data"]) {
        const children = await cpuSeconds(process.pid, true);
        const took = await timed(() => run("pg_restore", [`--section=${section}`, "-d", bench.database.urlFor(target), dumpFile]));
        times.push(`${section} ${took.toFixed(2)} s (pg_restore's CPU ${((await cpuSeconds(process.pid, true)) - children).toFixed(2)} s)`);
      }
      const restoredDb = new pg.Client({ connectionString: bench.database.urlFor(target) });
      await restoredDb.connect();
      const { rows: tables } = await restoredDb.query<{ name: string }>("select format('%I.%I', schemaname, tablename) as name from pg_tables where schemaname in ('auth', 'backend')");
      times.push(`analyze ${(await timed(() => restoredDb.query(`analyze ${tables.map((t) => t.name).join(", ")}`))).toFixed(2)} s`);
      await restoredDb.end();
      await admin.query(`drop database ${target}`);
      process.stdout.write(`  pg_restore sections: ${times.join(", ")}\n`);
    };
    // Both sides go first in turn.
    const order = round % 2 === 0 ? [dump, dumpFast, backup, pgRestore, pgRestoreJobs, pgRestoreReady, clone] : [backup, dumpFast, dump, clone, pgRestoreReady, pgRestoreJobs, pgRestore];
    for (const step of phases ? [...order, pgRestoreSections] : order) {
      await step();
    }
    await settle();
    takePhases();
    figures.inPlace.push(await timed(() => backups.restoreBackup({ backupId })));
    if (phases) {
      process.stdout.write(`  in place: ${takePhases()}\n`);
    }
    // The restored database is read by the next round: its rows' hint bits set now, as a load by pg_restore's would be later.
    const fresh = new pg.Client({ connectionString: bench.database.urlFor(await databaseOf(tenantId)) });
    await fresh.connect();
    await fresh.query("vacuum");
    await fresh.end();
    await admin.query(`drop database ${restored}`);
    await backups.deleteBackup({ backupId });
    process.stdout.write(
      `round ${round + 1}/${rounds}: pg_dump ${figures.dump.at(-1)!.toFixed(2)} s (-Z1 ${figures.dumpFast.at(-1)!.toFixed(2)} s), backup ${figures.backup.at(-1)!.toFixed(2)} s, pg_restore ${figures.pgRestore.at(-1)!.toFixed(2)} s (-j 2 ${figures.pgRestoreJobs.at(-1)!.toFixed(2)} s), clone ${figures.clone.at(-1)!.toFixed(2)} s, in place ${figures.inPlace.at(-1)!.toFixed(2)} s\n`,
    );
  }
  await rm(dumpFile, { force: true });

  // GetEntry of the other tenants, alone and while backups of "big" run one after another.
  process.stdout.write("GetEntry of other tenants, without and during backups…\n");
  const load = { targets, concurrency, serverPid: mesh.backend.pid!, postmasterPid: bench.database.pid };
  const drive = () => driveGetEntry(`127.0.0.1:${mesh.ports.backend}`, { ...load, duration: seconds });
  await driveGetEntry(`127.0.0.1:${mesh.ports.backend}`, { ...load, duration: 2 });
  const quiet: Round[] = [];
  const during: Round[] = [];
  const platformPid = mesh.processes.platform!.pid!;
  const platformUse = { quiet: { normal: 0, niced: 0 }, during: { normal: 0, niced: 0 } };
  let backupsDuring = 0;
  const underBackups = async () => {
    let loading = true;
    const taken: string[] = [];
    const looping = (async () => {
      while (loading) {
        const { backup } = await backups.createBackup({ tenantId, label: "under load" });
        taken.push(backup!.backupId);
      }
    })();
    const round = await drive();
    loading = false;
    await looping;
    backupsDuring += taken.length;
    for (const backupId of taken) {
      await backups.deleteBackup({ backupId });
    }
    return round;
  };
  for (let round = 0; round < loadRounds; round++) {
    // Both kinds of round go first in turn.
    for (const loaded of round % 2 === 0 ? [false, true] : [true, false]) {
      await settle();
      const before = await platformThreadSeconds(platformPid);
      (loaded ? during : quiet).push(loaded ? await underBackups() : await drive());
      const after = await platformThreadSeconds(platformPid);
      const use = loaded ? platformUse.during : platformUse.quiet;
      use.normal += after.normal - before.normal;
      use.niced += after.niced - before.niced;
    }
  }
  const rps = (r: Round) => r.calls / r.seconds;
  const quietRps = median(quiet.map(rps));
  const duringRps = median(during.map(rps));
  const q = summarize(quiet);
  const d = summarize(during);

  await admin.end();
  platformTransport.close();
  authTransport.close();
  backendTransport.close();

  const pgRestoreAnalyzed = figures.pgRestore.map((t, i) => t + figures.analyze[i]!);
  const mb = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`;
  const sec = (values: number[]) => `${median(values).toFixed(2)} s`;
  // Each round's ratio, then their median: the two sides of a round ran seconds apart, under the same load from elsewhere.
  const ratio = (tenantry: number[], baseline: number[]) => median(tenantry.map((t, i) => t / baseline[i]!));
  const ratios = {
    backup: ratio(figures.backup, figures.dump),
    clone: ratio(figures.clone, figures.pgRestore),
    inPlace: ratio(figures.inPlace, figures.pgRestore),
    getEntry: ratio(during.map(rps), quiet.map(rps)),
  };
  const row = (what: string, tenantry: string, baseline: string, value: number) => [what, tenantry, baseline, value.toFixed(2)];
  process.stdout.write(`
Backups of one tenant (a ${databaseMb.toFixed(0)} MB database: ${entryCount} entries, ${userCount} users) on PostgreSQL ${serverVersion} (${ephemeral ? "without fsync" : "durable"}),
medians of ${rounds} rounds (a ratio is the median of the rounds' ratios); in each, Tenantry and pg_dump / pg_restore take turns going first;
backups at TENANTRY_BACKUP_MAX_RATE=${backupRate ?? "(Platform's default)"}
${table(
  ["Tenantry / baseline", "Tenantry", "baseline", "ratio"],
  [
    row("backup: CreateBackup / pg_dump -Fc", sec(figures.backup), sec(figures.dump), ratios.backup),
    row("restore as a clone / pg_restore into a new db", sec(figures.clone), sec(figures.pgRestore), ratios.clone),
    row("restore in place / pg_restore into a new db", sec(figures.inPlace), sec(figures.pgRestore), ratios.inPlace),
    row("size: backup / pg_dump -Fc file", mb(figures.backupBytes), mb(figures.dumpBytes), figures.backupBytes / figures.dumpBytes),
    row("backup / pg_dump -Fc -Z1 (gzip level 1)", sec(figures.backup), sec(figures.dumpFast), ratio(figures.backup, figures.dumpFast)),
    row("size: backup / pg_dump -Fc -Z1 file", mb(figures.backupBytes), mb(figures.dumpFastBytes), figures.backupBytes / figures.dumpFastBytes),
    row("clone / pg_restore then ANALYZE", sec(figures.clone), sec(pgRestoreAnalyzed), ratio(figures.clone, pgRestoreAnalyzed)),
    row("clone / pg_restore into a database made before", sec(figures.clone), sec(figures.pgRestoreReady), ratio(figures.clone, figures.pgRestoreReady)),
    row("clone / pg_restore -j 2 (two connections too)", sec(figures.clone), sec(figures.pgRestoreJobs), ratio(figures.clone, figures.pgRestoreJobs)),
    row("in place / pg_restore -j 2", sec(figures.inPlace), sec(figures.pgRestoreJobs), ratio(figures.inPlace, figures.pgRestoreJobs)),
  ],
)}
(a restore ANALYZEs the tables it loaded before the tenant is served; pg_restore leaves that to be done;
a restore of a backup at the versions the cluster's stock of ready databases holds, TENANTRY_DATABASE_STOCK=${stockSize}, takes one of them
instead of creating and migrating a database, and the next round waits for the stock to be refilled)

GetEntry of ${targets.length} other tenants, ${concurrency} callers, ${loadRounds} pairs of ${seconds} s rounds; ${backupsDuring} backups of "${tenantId}" ran one after another in the loaded rounds
${table(
  ["rounds", "req/s", "p50 ms", "p99 ms", "errors"],
  [
    ["without backups", quietRps.toFixed(0), q.p50.toFixed(2), q.p99.toFixed(2), String(q.errors)],
    ["while backups run", duringRps.toFixed(0), d.p50.toFixed(2), d.p99.toFixed(2), String(d.errors)],
  ],
)}
other work on the machine during the rounds without backups: ${q.othersCores.toFixed(2)} of ${os.availableParallelism()} cores on average
cores in use on average, without backups / while backups run: Backend ${cores(quiet, "server")} / ${cores(during, "server")}, PostgreSQL ${cores(quiet, "postgres")} / ${cores(during, "postgres")}, callers ${cores(quiet, "client")} / ${cores(during, "client")}, Platform at its priority ${(platformUse.quiet.normal / seconds / quiet.length).toFixed(2)} / ${(platformUse.during.normal / seconds / during.length).toFixed(2)} and niced (compression) ${(platformUse.quiet.niced / seconds / quiet.length).toFixed(2)} / ${(platformUse.during.niced / seconds / during.length).toFixed(2)}, everything else ${cores(quiet, "others")} / ${cores(during, "others")} (Platform included)

Goal: backups
${goalTable([
  { measure: "backup time / pg_dump -Fc's", figure: ratios.backup, shown: ratios.backup.toFixed(2), atMost: 1, goal: "≤ 1.0" },
  { measure: "restore time as a clone / pg_restore's", figure: ratios.clone, shown: ratios.clone.toFixed(2), atMost: 1, goal: "≤ 1.0" },
  { measure: "restore time in place / pg_restore's", figure: ratios.inPlace, shown: ratios.inPlace.toFixed(2), atMost: 1, goal: "≤ 1.0" },
  { measure: "GetEntry of other tenants during backups / without", figure: ratios.getEntry, shown: ratios.getEntry.toFixed(2), atLeast: 0.8, goal: "≥ 0.80" },
])}
`);
} finally {
  await bench.stop();
}
