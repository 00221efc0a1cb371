import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { chmod, mkdir, mkdtemp, readdir, readFile, readlink, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { portVariables, registry } from "../services/registry.ts";
import { copyCheckout } from "../services/testing/checkout-copy.ts";
import { freePort } from "../services/testing/free-port.ts";

// `npm start` run as a new user runs it: `node services/start.ts` from a checkout, on ports of its own.

let scratch: string;
beforeAll(async () => {
  scratch = await mkdtemp(path.join(os.tmpdir(), "tenantry-start-"));
  await chmod(scratch, 0o755);
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

/** Every port `npm start` listens on, each free, by its variable. */
async function freePorts(): Promise<Record<string, string>> {
  const variables = [...registry.flatMap((s) => Object.values(portVariables(s))), "TENANTRY_WEB_PORT", "TENANTRY_EMBEDDED_POSTGRES_PORT"];
  const env: Record<string, string> = {};
  for (const variable of variables) {
    env[variable] = String(await freePort());
  }
  return env;
}

interface Started {
  child: ChildProcess;
  output(): string;
}

function start(checkout: string, env: Record<string, string>): Started {
  const child = spawn(process.execPath, [path.join(checkout, "services", "start.ts")], {
    cwd: checkout,
    env: { PATH: process.env.PATH, TENANTRY_LOG_LEVEL: "warn", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout!.on("data", (chunk) => (output += chunk));
  child.stderr!.on("data", (chunk) => (output += chunk));
  return { child, output: () => output };
}

async function exitCode(started: Started): Promise<number | null> {
  if (started.child.exitCode !== null) {
    return started.child.exitCode;
  }
  const [code] = (await once(started.child, "exit")) as [number | null];
  return code;
}

async function waitFor(started: Started, text: string, timeoutMs = 90_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!started.output().includes(text)) {
    if (started.child.exitCode !== null || Date.now() > deadline) {
      started.child.kill("SIGKILL");
      throw new Error(`expected "${text}" from npm start; it printed:\n${started.output()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function listening(port: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(Number(port), "127.0.0.1");
    socket.once("connect", () => (socket.destroy(), resolve(true)));
    socket.once("error", () => resolve(false));
  });
}

/** Processes whose command line names `text`. */
async function processesNaming(text: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (/^\d+$/.test(entry) && (await readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => "")).includes(text)) {
      pids.push(Number(entry));
    }
  }
  return pids;
}

describe("npm start", () => {
  it("runs the whole mesh from a checkout inside a folder only its owner can enter, and Ctrl-C stops everything", async () => {
    const home = path.join(scratch, "home");
    await mkdir(home);
    // Like root's home folder: nobody but its owner may enter.
    await chmod(home, 0o700);
    const checkout = path.join(home, "tenantry");
    await copyCheckout(checkout, ["package.json", "services", "gen"]);
    const ports = await freePorts();
    const started = start(checkout, ports);
    let relocated: string | undefined;
    try {
      await waitFor(started, "Tenantry is running.");
      expect(started.output()).toContain(`gRPC 127.0.0.1:${ports.TENANTRY_PLATFORM_GRPC_PORT}`);
      expect(started.output()).toContain(`http://127.0.0.1:${ports.TENANTRY_WEB_PORT}/?auth=http://127.0.0.1:${ports.TENANTRY_AUTH_HTTP_PORT}`);
      const ready = await fetch(`http://127.0.0.1:${ports.TENANTRY_BACKEND_HTTP_PORT}/readyz`);
      expect(ready.status).toBe(200);
      const dataLink = path.join(checkout, ".tenantry", "postgres", "data");
      if (process.getuid?.() === 0) {
        relocated = await readlink(dataLink);
        expect(started.output()).toContain(`data in ${relocated}`);
        expect(started.output()).toContain(`linked from ${dataLink}`);
      } else {
        expect(started.output()).toContain(`data in ${dataLink}`);
      }
    } finally {
      started.child.kill("SIGINT");
      expect(await exitCode(started)).toBe(0);
    }
    for (const port of Object.values(ports)) {
      expect(await listening(port), `port ${port}`).toBe(false);
    }
    expect(await processesNaming(checkout)).toEqual([]);
    if (relocated !== undefined) {
      expect(await processesNaming(relocated)).toEqual([]);
      await rm(path.dirname(relocated), { recursive: true, force: true });
    }
  });

  it("names the variable of a taken port and starts nothing", async () => {
    const ports = await freePorts();
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(Number(ports.TENANTRY_BACKEND_GRPC_PORT), "127.0.0.1", resolve));
    const dataDir = path.join(scratch, "taken");
    try {
      const started = start(process.cwd(), { ...ports, TENANTRY_DATA_DIR: dataDir });
      expect(await exitCode(started)).toBe(1);
      expect(started.output()).toBe(
        `Tenantry cannot start: port ${ports.TENANTRY_BACKEND_GRPC_PORT} on 127.0.0.1 (TENANTRY_BACKEND_GRPC_PORT) is already in use.\n` +
          "To fix it: stop what listens there, or set TENANTRY_BACKEND_GRPC_PORT to a free port.\n",
      );
    } finally {
      taken.close();
    }
    await expect(readdir(dataDir)).rejects.toThrow(/ENOENT/);
  });

  it("stops with one message and the remedy when the embedded server cannot start, leaving nothing running", async () => {
    const dataDir = path.join(scratch, "old-major");
    await mkdir(path.join(dataDir, "postgres", "data"), { recursive: true });
    await writeFile(path.join(dataDir, "postgres", "data", "PG_VERSION"), "16\n");
    const ports = await freePorts();
    const started = start(process.cwd(), { ...ports, TENANTRY_DATA_DIR: dataDir });
    expect(await exitCode(started)).toBe(1);
    const lines = started.output().trim().split("\n");
    expect(lines.at(-2)).toMatch(/^Tenantry cannot start: the data directory .* was made by PostgreSQL 16, and this is PostgreSQL \d+\.$/);
    expect(lines.at(-1)).toMatch(/^To fix it: .*TENANTRY_DATA_DIR/);
    expect(started.output()).not.toMatch(/^\s+at /m);
    for (const port of Object.values(ports)) {
      expect(await listening(port), `port ${port}`).toBe(false);
    }
  });

  it("exits 78 naming a malformed setting", async () => {
    const started = start(process.cwd(), { TENANTRY_WEB_PORT: "eighty" });
    expect(await exitCode(started)).toBe(78);
    expect(started.output()).toMatch(/^Tenantry cannot start: configuration error\nTENANTRY_WEB_PORT: .*\(got "eighty"\)\n$/);
  });
});
