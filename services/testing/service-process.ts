import { spawn, type ChildProcess } from "node:child_process";

/** A service started as a process of its own, with what it writes captured. */
export interface ServiceProcess {
  child: ChildProcess;
  /** Everything it has written to stdout and stderr so far. */
  output(): string;
}

/**
 * Starts a service's `main.ts` with `env` (and PATH) and waits until its
 * HTTP port answers `GET /readyz`; throws with the process's output if it
 * exits or is not ready within `timeoutMs`.
 */
export async function startServiceProcess(file: string, env: Record<string, string>, options: { httpPort: number; timeoutMs?: number }): Promise<ServiceProcess> {
  const child = spawn(process.execPath, [file], { env: { PATH: process.env.PATH, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout!.on("data", (chunk) => (output += chunk));
  child.stderr!.on("data", (chunk) => (output += chunk));
  const deadline = Date.now() + (options.timeoutMs ?? 30_000);
  while (!(await fetch(`http://127.0.0.1:${options.httpPort}/readyz`).then((r) => r.ok, () => false))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`${file} did not start:\n${output}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return { child, output: () => output };
}
