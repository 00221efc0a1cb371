import { spawn } from "node:child_process";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ClusterService } from "../gen/tenantry/platform/v1/cluster_service_pb.js";
import { operatorCredentialInterceptor } from "../services/mesh/index.ts";
import { startSecondServer, type SecondServer } from "../services/testing/second-server.ts";
import { startTestMesh, type TestMesh } from "../services/testing/test-mesh.ts";

const root = path.resolve(import.meta.dirname, "..");
const main = path.join(root, "services/cli/main.ts");

let mesh: TestMesh;
let second: SecondServer;
beforeAll(async () => {
  [mesh, second] = await Promise.all([startTestMesh({ services: ["auth", "backend"] }), startSecondServer()]);
  await mesh.client("platform", ClusterService, [operatorCredentialInterceptor(mesh.operatorToken)]).registerCluster(second.registration("second"));
});
afterAll(async () => {
  await mesh?.stop();
  await second?.stop();
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

interface RunOptions {
  /** Settings over the defaults (this mesh's Platform and operator token); undefined removes one. */
  env?: Record<string, string | undefined>;
  /** What to pipe into standard input. */
  input?: string;
  cwd?: string;
  /** The program to run instead of `node services/cli/main.ts`. */
  command?: [string, ...string[]];
}

/** The CLI's environment: this mesh's Platform and operator token with `overrides` over them, and no other TENANTRY_ setting. */
function cliEnv(overrides: Record<string, string | undefined> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  const settings = {
    TENANTRY_PLATFORM_ADDRESS: `127.0.0.1:${mesh.platform.grpcPort}`,
    TENANTRY_OPERATOR_TOKEN: mesh.operatorToken,
    ...overrides,
  };
  for (const [name, value] of Object.entries({ ...process.env, ...settings })) {
    if (value !== undefined && (!name.startsWith("TENANTRY_") || name in settings)) {
      env[name] = value;
    }
  }
  return env;
}

/** Runs the CLI in a process of its own, as an operator would, against this mesh's Platform. */
function tenantry(args: string[], options: RunOptions = {}): Promise<Run> {
  const env = cliEnv(options.env);
  const [program, ...programArgs] = options.command ?? [process.execPath, main];
  return new Promise((resolve, reject) => {
    const child = spawn(program, [...programArgs, ...args], { cwd: options.cwd ?? root, env, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(options.input ?? "");
  });
}

/** A CLI run on a terminal: what the terminal has shown so far, and its end. */
interface TerminalRun {
  /** Resolves once the terminal has shown something that matches. */
  shown(pattern: RegExp): Promise<string>;
  /** Its exit code and everything the terminal showed (stdout and stderr together). */
  done: Promise<{ code: number | null; screen: string }>;
}

/** Runs the CLI in a pseudo-terminal 200 columns wide (util-linux `script`), as an operator at a terminal would. */
function tenantryOnTerminal(args: string[]): TerminalRun {
  const quote = (word: string) => `'${word.replaceAll("'", "'\\''")}'`;
  const line = `stty cols 200 && exec ${[process.execPath, main, ...args].map(quote).join(" ")}`;
  const child = spawn("script", ["--quiet", "--return", "--command", line, "/dev/null"], { cwd: root, env: cliEnv(), stdio: ["ignore", "pipe", "pipe"] });
  let screen = "";
  const waiting: { pattern: RegExp; resolve: (screen: string) => void }[] = [];
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    screen += chunk;
    for (const wait of waiting.filter((w) => w.pattern.test(screen))) {
      waiting.splice(waiting.indexOf(wait), 1);
      wait.resolve(screen);
    }
  });
  const done = new Promise<{ code: number | null; screen: string }>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code) => {
      for (const wait of waiting) {
        wait.resolve(screen);
      }
      resolve({ code, screen });
    });
  });
  return { shown: (pattern) => new Promise((resolve) => (pattern.test(screen) ? resolve(screen) : waiting.push({ pattern, resolve }))), done };
}

const uuid = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}";

describe("tenantry clusters drain", () => {
  it("moves every tenant off with a live bar, lists those left, and goes on from there when run again", async () => {
    const moved = [(await mesh.createTenant()).tenantId, (await mesh.createTenant()).tenantId];
    const asleep = (await mesh.createTenant()).tenantId;
    await mesh.platformClient.suspendTenant({ tenantId: asleep });

    const unknown = await tenantry(["clusters", "drain", "nowhere"]);
    expect([unknown.code, unknown.stderr]).toEqual([3, expect.stringMatching(/^error: NOT_FOUND: cluster "nowhere" is not registered/)]);
    const usage = await tenantry(["clusters", "drain", "default", "--concurrency", "17"]);
    expect(usage.code).toBe(2);
    const mode = await tenantry(["clusters", "drain", "default", "--mode", "fast"]);
    expect(mode.code).toBe(2);

    const run = tenantryOnTerminal(["clusters", "drain", "default", "--concurrency", "2", "--mode", "copy", "--to", "second"]);
    const { code, screen } = await run.done;
    expect(code, screen).toBe(1);
    expect(screen).toMatch(/draining default .* 3\/3 tenants \| 2 moved, 0 moving, 0 failed, 1 left \|/);
    expect(screen).toMatch(/^cluster default is draining: 3 tenants, 2 moved, 0 failed, 1 left\r?$/m);
    expect(screen).toMatch(new RegExp(`^${asleep} +tenant_left +tenant "${asleep}" is suspended: only an ACTIVE tenant can be moved\\r?$`, "m"));
    expect(screen).toMatch(/^error: 1 of 3 tenants were not moved off cluster "default"/m);
    for (const tenantId of moved) {
      expect((await mesh.platformClient.getTenant({ tenantId })).tenant!.cluster).toBe("second");
    }

    await mesh.platformClient.resumeTenant({ tenantId: asleep });
    const again = await tenantry(["--json", "clusters", "drain", "default"]);
    expect(again, again.stderr).toMatchObject({ code: 0 });
    expect(JSON.parse(again.stdout)).toEqual({ cluster: "default", totals: { total: 1, moved: 1, failed: 0, left: 0, remaining: 0, moving: 0 }, notMoved: [] });
    expect(again.stderr).toMatch(new RegExp(`^0/1 ${asleep} move started -> second \\(move ${uuid}\\)$`, "m"));
    expect(again.stderr).toMatch(new RegExp(`^1/1 ${asleep} move succeeded -> second \\(move ${uuid}\\)$`, "m"));

    const done = await tenantry(["clusters", "drain", "default"]);
    expect(done, done.stderr).toMatchObject({ code: 0 });
    expect(done.stderr).toBe("0/0 draining default: 0 tenants on it\n0/0 drained default: 0 moved, 0 failed, 0 left\n");
    expect(done.stdout).toBe("cluster default is draining: 0 tenants, 0 moved, 0 failed, 0 left\n");
  });
});
