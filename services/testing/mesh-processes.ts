import type { ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { freePort } from "./free-port.ts";
import { startServiceProcess } from "./service-process.ts";
import { TestServer } from "./test-server.ts";

/** One service running as a process of its own. */
export interface MeshProcess {
  grpcPort: number;
  httpPort: number;
  /** Everything it has written to stdout and stderr so far. */
  output(): string;
}

/** Platform, Auth and Backend as processes, started from their `main.ts` as in production. */
export interface MeshProcesses {
  platform: MeshProcess;
  auth: MeshProcess;
  backend: MeshProcess;
  /** Data dir, mesh key, operator token and master key: the settings every service shares. */
  sharedEnv: Record<string, string>;
  /** Stops the processes (SIGTERM, so that they flush what they hold) and removes the data dir. */
  stop(): Promise<void>;
}

/**
 * Starts the three services as processes against the tests' PostgreSQL, with
 * a platform database of their own, and waits until each is ready. `env` is
 * given to every one of them.
 */
export async function startMeshProcesses(env: Record<string, string> = {}): Promise<MeshProcesses> {
  const platformDatabaseUrl = new TestServer().databaseUrl(`tenantry_platform_${randomBytes(4).toString("hex")}`);
  const dataDir = await mkdtemp(path.join(os.tmpdir(), "tenantry-processes-"));
  const sharedEnv = {
    TENANTRY_DATA_DIR: dataDir,
    TENANTRY_MESH_KEY: randomBytes(32).toString("base64url"),
    TENANTRY_OPERATOR_TOKEN: randomBytes(32).toString("base64url"),
    TENANTRY_MASTER_KEY: randomBytes(32).toString("base64url"),
  };
  const ports = { platform: await freePort(), auth: await freePort(), backend: await freePort() };
  const tenantEnv = { TENANTRY_PLATFORM_ADDRESS: `127.0.0.1:${ports.platform}`, TENANTRY_AUTH_ADDRESS: `127.0.0.1:${ports.auth}` };
  const children: ChildProcess[] = [];

  async function start(name: string, grpcPort: number, serviceEnv: Record<string, string>): Promise<MeshProcess> {
    const httpPort = await freePort();
    const { child, output } = await startServiceProcess(
      path.resolve(`services/${name}/main.ts`),
      { ...sharedEnv, TENANTRY_GRPC_PORT: String(grpcPort), TENANTRY_HTTP_PORT: String(httpPort), ...serviceEnv, ...env },
      { httpPort },
    );
    children.push(child);
    return { grpcPort, httpPort, output };
  }

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
    const platform = await start("platform", ports.platform, {
      TENANTRY_DATABASE_URL: platformDatabaseUrl,
      TENANTRY_SCHEMA_SERVICES: `auth=127.0.0.1:${ports.auth},backend=127.0.0.1:${ports.backend}`,
    });
    const auth = await start("auth", ports.auth, tenantEnv);
    const backend = await start("backend", ports.backend, tenantEnv);
    return { platform, auth, backend, sharedEnv, stop };
  } catch (error) {
    children.forEach((child) => child.kill("SIGKILL"));
    throw error;
  }
}
