import { ConnectError } from "@connectrpc/connect";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { createGrpcJsTransport, operatorCredentialInterceptor, type GrpcJsTransport } from "../mesh/index.ts";
import { freePort } from "./free-port.ts";
import type { TestMesh } from "./test-mesh.ts";

const crashingPlatform = fileURLToPath(new URL("crashing-platform.ts", import.meta.url));

/** How a call made to a Platform that killed itself went. */
export interface PlatformCrash {
  /** The call's error; undefined when it was answered before the crash. */
  error: ConnectError | undefined;
  /** The signal that ended the process: SIGKILL when it crashed as told. */
  signal: NodeJS.Signals | null;
  /** Whether the process had to be killed for not crashing within 30 s. */
  reaped: boolean;
}

/**
 * Stops the mesh's Platform and runs one as its own process that kills
 * itself with SIGKILL right after `step` (see crashing-platform.ts), on the
 * same gRPC port; makes `call` through it and waits until it is dead.
 * Restart the mesh's Platform afterwards (`restartPlatform`).
 */
export async function callAndCrash(
  mesh: TestMesh,
  step: string,
  call: (transport: GrpcJsTransport) => Promise<unknown>,
  env: Record<string, string> = {},
): Promise<PlatformCrash> {
  await mesh.stopPlatform();
  const httpPort = await freePort();
  const child = spawn(process.execPath, [crashingPlatform], {
    env: { PATH: process.env.PATH, ...mesh.platformProcessEnv, TENANTRY_HTTP_PORT: String(httpPort), TENANTRY_LOG_LEVEL: "silent", TENANTRY_TEST_CRASH_AFTER: step, ...env },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr!.on("data", (chunk) => (stderr += chunk));
  const exited = once(child, "exit");
  // Should it not crash as told, it must not outlive the test.
  let reaped = false;
  const reaper = setTimeout(() => {
    reaped = true;
    child.kill("SIGKILL");
  }, 30_000);
  void exited.finally(() => clearTimeout(reaper));
  const deadline = Date.now() + 20_000;
  while (!(await fetch(`http://127.0.0.1:${httpPort}/readyz`).then((r) => r.ok, () => false))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      throw new Error(`crashing Platform did not start:\n${stderr}`);
    }
    await sleep(100);
  }
  const transport = createGrpcJsTransport({ address: `127.0.0.1:${mesh.platformProcessEnv.TENANTRY_GRPC_PORT}`, interceptors: [operatorCredentialInterceptor(mesh.operatorToken)] });
  const error = await call(transport).then(() => undefined, (e: unknown) => ConnectError.from(e));
  transport.close();
  const [, signal] = (await exited) as [number | null, NodeJS.Signals | null];
  return { error, signal, reaped };
}

