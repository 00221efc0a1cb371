import { randomInt } from "node:crypto";
import { readFileSync } from "node:fs";
import net from "node:net";

/** Ports from `from` up to, not including, `to`. */
export interface PortRange {
  from: number;
  to: number;
}

/** Linux's default ephemeral range, when /proc does not say. */
const defaultEphemeral: PortRange = { from: 32_768, to: 61_000 };

/** Ports in one block: more than a test file's servers ask for. */
const blockSize = 256;

/** How far below the ephemeral range test ports go (above 16384 by default, clear of the well-known ports). */
const spanBelow = 16_384;

/**
 * The kernel's ephemeral port range, the ports it gives outgoing
 * connections (and `listen(0)`), from the text of
 * /proc/sys/net/ipv4/ip_local_port_range ("32768\t60999"); Linux's default
 * when there is none or it cannot be read.
 */
export function ephemeralRange(text: string | undefined): PortRange {
  const [low, high] = (text ?? "").trim().split(/\s+/).map(Number);
  if (low === undefined || high === undefined || !Number.isInteger(low) || !Number.isInteger(high) || low < 1 || high < low || high > 65_535) {
    return defaultEphemeral;
  }
  return { from: low, to: high + 1 };
}

/**
 * Where test ports come from: below the ephemeral range, or above it when
 * there is more room there. A port of the ephemeral range, free when
 * picked, can become any outgoing connection's source port before the test
 * binds it (listen EADDRINUSE); outgoing connections never take one outside.
 */
export function testPortRange(ephemeral: PortRange): PortRange {
  const below = { from: Math.max(1_024, ephemeral.from - spanBelow), to: ephemeral.from };
  const above = { from: ephemeral.to, to: 65_536 };
  return below.to - below.from >= above.to - above.from ? below : above;
}

/**
 * The block of `range` a process picks its ports from. The first three
 * quarters of the blocks belong to vitest workers, one each by pool id
 * (VITEST_POOL_ID: 1 to the number of workers, unique among those running
 * at once), so two workers of a run never pick the same port; any other
 * process (vitest's own, where global setup runs; a benchmark) takes one of
 * the last quarter by its pid. Should more workers run than there are
 * blocks, or several runs at once, the claims of {@link portPicker} still
 * keep their ports apart.
 */
export function portBlock(range: PortRange, owner: { poolId: number | undefined; pid: number }): PortRange {
  const blocks = Math.max(2, Math.floor((range.to - range.from) / blockSize));
  const size = Math.floor((range.to - range.from) / blocks);
  const workerBlocks = blocks - Math.max(1, Math.floor(blocks / 4));
  const index = owner.poolId !== undefined ? (owner.poolId - 1) % workerBlocks : workerBlocks + (owner.pid % (blocks - workerBlocks));
  return { from: range.from + index * size, to: range.from + (index + 1) * size };
}

/** Options of {@link portPicker}. */
export interface PortPickerOptions {
  /** The ports it gives. */
  block: PortRange;
  /** Names the claims (abstract Unix sockets) through which processes picking ports keep them apart. */
  claims: string;
}

/**
 * A function that gives a port of `block` on each call, never the same one
 * twice, each one that nothing listens on at the moment, claimed for as
 * long as this process lives. It walks the block from a random point, so
 * that processes given the same block (a worker's successive test files,
 * runs side by side) start apart; each port it gives is claimed with an
 * abstract Unix socket named after it (Linux), which no other process
 * can take until this one ends, so that no picker of another process gives
 * it meanwhile, whether or not the test has bound it yet. It rejects once
 * every port of the block has been tried.
 */
export function portPicker({ block, claims }: PortPickerOptions): () => Promise<number> {
  const size = block.to - block.from;
  let next = block.from + randomInt(size);
  let tried = 0;
  return async () => {
    while (tried < size) {
      // Taken before any await: calls at once get different ports.
      const port = next;
      next = port + 1 < block.to ? port + 1 : block.from;
      tried++;
      const claim = await claimPort(claims, port);
      if (claim === undefined) {
        continue;
      }
      if (await bindable(port)) {
        return port;
      }
      claim.release();
    }
    throw new Error(`no free port left in ${block.from}-${block.to - 1}: every one has been given, is claimed by another process or is in use`);
  };
}

/** Claims a port among the processes of this machine, for as long as this one lives or until released; undefined when another process holds the claim. */
function claimPort(claims: string, port: number): Promise<{ release: () => void } | undefined> {
  if (process.platform !== "linux") {
    // Abstract sockets are Linux's: elsewhere the blocks alone keep workers apart.
    return Promise.resolve({ release: () => undefined });
  }
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once("error", () => resolve(undefined));
    server.listen({ path: `\0${claims}-${port}` }, () => {
      // Held without keeping the process alive: the kernel drops the claim when the process ends.
      server.unref();
      resolve({ release: () => void server.close() });
    });
  });
}

/** Whether a TCP port can be listened on, on the loopback interface, now: Node sets no SO_REUSEPORT, so this fails if anything listens there. */
function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once("error", () => resolve(false));
    server.listen({ port, host: "127.0.0.1" }, () => server.close(() => resolve(true)));
  });
}

/** The ports of this process's block, as {@link portBlock} assigns it. */
export function ownPortBlock(): PortRange {
  let text: string | undefined;
  try {
    text = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8");
  } catch {
    text = undefined;
  }
  // VITEST_WORKER_ID only where a vitest sets no VITEST_POOL_ID (ids grow with each worker started, so blocks may then be shared).
  const id = Number(process.env.VITEST_POOL_ID ?? process.env.VITEST_WORKER_ID);
  return portBlock(testPortRange(ephemeralRange(text)), { poolId: Number.isInteger(id) && id > 0 ? id : undefined, pid: process.pid });
}

let pick: (() => Promise<number>) | undefined;

/**
 * A TCP port on the loopback interface for a test server to bind: free when
 * given, outside the kernel's ephemeral range, in this process's block
 * (its vitest worker's), never given twice, and claimed against other
 * processes picking ports (see {@link portPicker}).
 */
export function freePort(): Promise<number> {
  pick ??= portPicker({ block: ownPortBlock(), claims: "tenantry-test-port" });
  return pick();
}
