import { spawn } from "node:child_process";
import { once } from "node:events";
import { readFile } from "node:fs/promises";
import net from "node:net";
import readline from "node:readline";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { ephemeralRange, freePort, ownPortBlock, portBlock, portPicker, testPortRange } from "./free-port.ts";

/** Listens on a port of the loopback interface, or fails as a test server would. */
async function listenOn(port: number): Promise<net.Server> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ port, host: "127.0.0.1" }, resolve);
  });
  return server;
}

const close = (server: net.Server) => new Promise((resolve) => server.close(resolve));

/** Claims names of this spec's own pickers: apart from freePort's, whose claims this process holds on the ports it gave. */
const specClaims = `tenantry-free-port-spec-${process.pid}`;

/**
 * Runs `script` (ES module text that has `freePort`, `portPicker` and
 * `specClaims` in scope and prints one line) in a process of its own with
 * `env`: resolves to what it printed, and a function that ends it. The
 * process lives until then, holding what it claimed.
 */
async function inProcess(script: string, env: Record<string, string> = {}): Promise<{ printed: unknown; end: () => Promise<void> }> {
  const module = fileURLToPath(new URL("./free-port.ts", import.meta.url));
  const child = spawn(
    process.execPath,
    [
      "--input-type=module",
      "-e",
      `import { freePort, portPicker } from ${JSON.stringify(module)};
       const specClaims = ${JSON.stringify(specClaims)};
       ${script}
       process.stdin.resume();
       process.stdin.on("end", () => process.exit(0));`,
    ],
    { stdio: ["pipe", "pipe", "inherit"], env: { ...process.env, VITEST_POOL_ID: "", VITEST_WORKER_ID: "", ...env } },
  );
  const [line] = (await once(readline.createInterface({ input: child.stdout! }), "line")) as [string];
  return {
    printed: JSON.parse(line),
    end: async () => {
      child.stdin!.end();
      await once(child, "exit");
    },
  };
}

describe("free ports", () => {
  it("are below the kernel's ephemeral range, in this worker's block, each given once and free to listen on", async () => {
    const ephemeral = ephemeralRange(await readFile("/proc/sys/net/ipv4/ip_local_port_range", "utf8").catch(() => undefined));
    const block = portBlock(testPortRange(ephemeral), { poolId: Number(process.env.VITEST_POOL_ID), pid: process.pid });
    expect(ownPortBlock()).toEqual(block);
    expect(block.to).toBeLessThanOrEqual(ephemeral.from);
    const ports = await Promise.all(Array.from({ length: 40 }, () => freePort()));
    expect(new Set(ports).size).toBe(40);
    expect(ports.filter((port) => port < block.from || port >= block.to)).toEqual([]);
    const servers = await Promise.all(ports.map(listenOn));
    await Promise.all(servers.map(close));
  });

  it("skip a port something listens on, and are never given twice", async () => {
    const port = await freePort();
    const taken = await listenOn(port);
    try {
      await expect(portPicker({ block: { from: port, to: port + 1 }, claims: specClaims })()).rejects.toThrow(`no free port left in ${port}-${port}`);
    } finally {
      await close(taken);
    }
    const pick = portPicker({ block: { from: port, to: port + 1 }, claims: specClaims });
    expect(await pick()).toBe(port);
    await expect(pick()).rejects.toThrow(/no free port left/);
  });

  it("are not given while another process holds its claim on them, bound or not", async () => {
    const port = await freePort();
    const other = await inProcess(`console.log(await portPicker({ block: { from: ${port}, to: ${port + 1} }, claims: specClaims })());`);
    expect(other.printed).toBe(port);
    try {
      await expect(portPicker({ block: { from: port, to: port + 1 }, claims: specClaims })()).rejects.toThrow(/no free port left/);
    } finally {
      await other.end();
    }
    // The claim ends with its process.
    expect(await portPicker({ block: { from: port, to: port + 1 }, claims: specClaims })()).toBe(port);
  });

  it("differ between two workers, and between two processes of one worker's block (runs side by side)", async () => {
    const script = "console.log(JSON.stringify(await Promise.all(Array.from({ length: 60 }, () => freePort()))));";
    // Pool ids no worker of a run on this machine has, so that this spec takes no ports from other specs' blocks.
    const processes = [
      await inProcess(script, { VITEST_POOL_ID: "40" }),
      await inProcess(script, { VITEST_POOL_ID: "41" }),
      await inProcess(script, { VITEST_POOL_ID: "42" }),
      await inProcess(script, { VITEST_POOL_ID: "42" }),
    ];
    try {
      const [first, second, third, fourth] = processes.map((p) => p.printed as number[]);
      const range = testPortRange(ephemeralRange(await readFile("/proc/sys/net/ipv4/ip_local_port_range", "utf8").catch(() => undefined)));
      const within = (ports: number[], poolId: number) => {
        const block = portBlock(range, { poolId, pid: 0 });
        return ports.filter((port) => port < block.from || port >= block.to);
      };
      expect([within(first!, 40), within(second!, 41), within(third!, 42), within(fourth!, 42)]).toEqual([[], [], [], []]);
      const all = [first!, second!, third!, fourth!].flat();
      expect(all).toHaveLength(240);
      expect(new Set(all).size).toBe(240);
    } finally {
      await Promise.all(processes.map((p) => p.end()));
    }
  });
});
