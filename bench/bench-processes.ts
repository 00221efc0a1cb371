// What the benchmarks share: a PostgreSQL server in a temporary directory,
// Tenantry's services as processes of their own, credentials, and cleanup.
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { startEmbeddedDatabase, type EmbeddedDatabase } from "../services/mesh/index.ts";
import { crashDatabase } from "../services/testing/database-crash.ts";
import { freePort } from "../services/testing/free-port.ts";
import { planMesh } from "../services/testing/mesh-plan.ts";

/** The repository's root. */
export const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");

/** A benchmark's PostgreSQL server, processes and credentials. */
export interface BenchProcesses {
  dir: string;
  /** The PostgreSQL server as started last. */
  database: EmbeddedDatabase;
  /**
   * Crashes PostgreSQL as `pg_ctl stop -m immediate` does and starts it again
   * on the same directory and port, crash recovery included.
   */
  restartDatabase(): Promise<void>;
  operatorToken: string;
  /** Data dir, mesh key and operator token: what every service of the run shares. */
  shared: Record<string, string>;
  /** Starts a Node process and waits until its HTTP port answers /readyz (or it prints "ready"). */
  start(name: string, file: string, env: Record<string, string>, args?: string[]): Promise<ChildProcess>;
  /** Stops every process (SIGTERM) and waits for them to exit. */
  stopProcesses(): Promise<void>;
  /** Stops every process, then PostgreSQL, and removes the directory. */
  stop(): Promise<void>;
}

/** Options of {@link startBenchProcesses}. */
export interface BenchProcessesOptions {
  /** Trade durability for speed (no fsync). */
  ephemeral: boolean;
  /** The PostgreSQL build to run (`bin/` and what it finds from there); by default the embedded one. */
  installDir?: string;
}

/** Starts PostgreSQL for a benchmark. */
export async function startBenchProcesses(options: BenchProcessesOptions): Promise<BenchProcesses> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "tenantry-bench-"));
  const port = await freePort();
  const databaseOptions = { dir, port, ephemeral: options.ephemeral, ...(options.installDir !== undefined && { installDir: options.installDir }) };
  let database = await startEmbeddedDatabase(databaseOptions);
  const children: ChildProcess[] = [];
  const operatorToken = randomBytes(32).toString("base64url");
  const stopProcesses = async () => {
    for (const child of children.splice(0).reverse()) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        await once(child, "exit");
      }
    }
  };
  return {
    dir,
    get database() {
      return database;
    },
    async restartDatabase() {
      await crashDatabase(dir, port);
      // The crashed instance is not stopped: its process is gone.
      database = await startEmbeddedDatabase(databaseOptions);
    },
    operatorToken,
    shared: { TENANTRY_DATA_DIR: dir, TENANTRY_MESH_KEY: randomBytes(32).toString("base64url"), TENANTRY_OPERATOR_TOKEN: operatorToken },
    async start(name, file, env, args = []) {
      const child = spawn(process.execPath, [...args, file], { env: { PATH: process.env.PATH, TENANTRY_LOG_LEVEL: "warn", ...env }, stdio: ["ignore", "pipe", "inherit"] });
      children.push(child);
      let out = "";
      child.stdout!.on("data", (chunk) => (out += chunk));
      // A process that dies mid-run says why, or the round fails with nothing to go on.
      child.on("exit", (code, signal) => {
        if (code !== 0 && signal !== "SIGTERM") {
          process.stderr.write(`${name} exited (${signal ?? code}):\n${out}\n`);
        }
      });
      const deadline = Date.now() + 30_000;
      const probe = env.TENANTRY_HTTP_PORT;
      for (;;) {
        const ready = probe ? await fetch(`http://127.0.0.1:${probe}/readyz`).then((r) => r.ok, () => false) : out.includes("ready");
        if (ready) {
          return child;
        }
        if (child.exitCode !== null || Date.now() > deadline) {
          throw new Error(`${name} did not start`);
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    },
    stopProcesses,
    async stop() {
      await stopProcesses();
      await database.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Starts every registered service as a process (see services/registry.ts),
 * Platform first; `backendFile` replaces Backend's main (`backendArgs` go
 * to its Node), `env` is given to all of them. Platform places tenants as
 * deployed (STANDARD pooled by default): benches that measure one placement
 * ask for it in CreateTenant.
 */
export async function startBenchMesh(bench: BenchProcesses, options: { backendFile?: string; backendArgs?: string[]; platformEnv?: Record<string, string>; env?: Record<string, string> } = {}) {
  const plan = await planMesh({
    sharedEnv: bench.shared,
    platformDatabaseUrl: bench.database.urlFor("tenantry_platform"),
    tierPlacements: null,
    platformEnv: { ...options.env, ...options.platformEnv },
    tenantServiceEnv: options.env,
    pickHttpPorts: true,
  });
  const ports = Object.fromEntries(plan.map((s) => [s.name, s.grpcPort])) as Record<string, number> & { platform: number; auth: number; backend: number };
  const backendPlan = plan.find((s) => s.name === "backend")!;
  /** Starts Backend (again): `file` as its main, with `more` added to its environment and `args` given to Node. */
  const startBackend = (file = options.backendFile ?? path.join(root, backendPlan.registered!.main), more: { env?: Record<string, string>; args?: string[] } = {}) =>
    bench.start("backend", file, { ...backendPlan.env, ...more.env }, more.args ?? options.backendArgs);
  let backend: ChildProcess | undefined;
  const processes: Record<string, ChildProcess> = {};
  for (const service of plan) {
    if (service === backendPlan) {
      backend = await startBackend();
      processes[service.name] = backend;
    } else {
      processes[service.name] = await bench.start(service.name, path.join(root, service.registered!.main), service.env);
    }
  }
  /** Each service's process as started first, by name (their stdout carries their logs). */
  return { ports, backend: backend!, startBackend, processes };
}

/** The value at quantile `q` of sorted numbers. */
export function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}
