import type { ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { planMesh, type UnregisteredService } from "./mesh-plan.ts";
import { startServiceProcess } from "./service-process.ts";
import { TestServer } from "./test-server.ts";

const root = fileURLToPath(new URL("../..", import.meta.url));

/** One service running as a process of its own. */
export interface MeshProcess {
  grpcPort: number;
  httpPort: number;
  /** Everything it has written to stdout and stderr so far. */
  output(): string;
}

/** Options of {@link startMeshProcesses}. */
export interface MeshProcessesOptions {
  /** The registered services to run besides Platform, which always runs (see services/registry.ts); by default every one. */
  services?: string[];
  /** One more service, not in the registry, run from its entry (a main.ts, from the repository root) and wired like the others. */
  serviceUnderTest?: UnregisteredService & { main: string };
  /**
   * Platform's TENANTRY_TIER_PLACEMENTS: by default every tier dedicated
   * (see `testTierPlacements` in mesh-plan.ts); null for Platform's own
   * defaults (STANDARD pooled).
   */
  tierPlacements?: string | null;
  /** Settings given to every service, over the mesh's own. */
  env?: Record<string, string>;
}

/** Platform and the other services as processes, started from their `main.ts` as in production. */
export interface MeshProcesses {
  /** A service's process; throws when the service is not in this mesh. */
  process(name: string): MeshProcess;
  platform: MeshProcess;
  auth: MeshProcess;
  backend: MeshProcess;
  /** Data dir, mesh key, operator token and master key: the settings every service shares. */
  sharedEnv: Record<string, string>;
  /** Kills a service's process with SIGKILL, as a crash would, and resolves once it is gone. */
  kill(name: string): Promise<void>;
  /** Stops the processes (SIGTERM, so that they flush what they hold) and removes the data dir. */
  stop(): Promise<void>;
}

/**
 * Starts the services as processes against the tests' PostgreSQL, with a
 * platform database of their own, and waits until each is ready.
 */
export async function startMeshProcesses(options: MeshProcessesOptions = {}): Promise<MeshProcesses> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), "tenantry-processes-"));
  const sharedEnv = {
    TENANTRY_DATA_DIR: dataDir,
    TENANTRY_MESH_KEY: randomBytes(32).toString("base64url"),
    TENANTRY_OPERATOR_TOKEN: randomBytes(32).toString("base64url"),
    TENANTRY_MASTER_KEY: randomBytes(32).toString("base64url"),
  };
  const children: ChildProcess[] = [];
  const childOf = new Map<string, ChildProcess>();
  const processes = new Map<string, MeshProcess>();

  const stop = async () => {
    await Promise.all(
      children.map(async (child) => {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill("SIGTERM");
          await once(child, "exit");
        }
      }),
    );
    await rm(dataDir, { recursive: true, force: true });
  };
  try {
    const plan = await planMesh({
      services: options.services,
      unregistered: options.serviceUnderTest,
      sharedEnv,
      platformDatabaseUrl: new TestServer().databaseUrl(`tenantry_platform_${randomBytes(4).toString("hex")}`),
      tierPlacements: options.tierPlacements,
      platformEnv: options.env,
      tenantServiceEnv: options.env,
      pickHttpPorts: true,
    });
    // Platform first, as in production: the others wait for it.
    for (const service of plan) {
      const main = path.resolve(root, service.registered?.main ?? options.serviceUnderTest!.main);
      const { child, output } = await startServiceProcess(main, service.env, { httpPort: service.httpPort });
      children.push(child);
      childOf.set(service.name, child);
      processes.set(service.name, { grpcPort: service.grpcPort, httpPort: service.httpPort, output });
    }
  } catch (error) {
    children.forEach((child) => child.kill("SIGKILL"));
    await rm(dataDir, { recursive: true, force: true });
    throw error;
  }
  const processOf = (name: string) => {
    const found = processes.get(name);
    if (found === undefined) {
      throw new Error(`${name} is not in this mesh (it runs ${[...processes.keys()].join(", ")})`);
    }
    return found;
  };
  return {
    process: processOf,
    get platform() {
      return processOf("platform");
    },
    get auth() {
      return processOf("auth");
    },
    get backend() {
      return processOf("backend");
    },
    sharedEnv,
    async kill(name) {
      processOf(name);
      const child = childOf.get(name)!;
      if (child.exitCode === null && child.signalCode === null) {
        const exited = once(child, "exit");
        child.kill("SIGKILL");
        await exited;
      }
    },
    stop,
  };
}
