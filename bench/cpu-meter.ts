// Where a benchmark's CPU went while it measured: the server under test, the
// process driving the load, PostgreSQL (its backends included), and the rest
// of the machine, read from /proc, so that a round run while other work
// loaded the machine can be told apart from a slow server.
import { readdir, readFile } from "node:fs/promises";

/** Clock ticks per second of /proc's CPU times (USER_HZ, 100 on Linux). */
const ticksPerSecond = 100;

/** CPU seconds (user + system) a process has used so far; with `children`, those of its ended children too. */
export async function cpuSeconds(pid: number, children = false): Promise<number> {
  const fields = (await readFile(`/proc/${pid}/stat`, "utf8")).split(") ")[1]!.split(" ");
  const own = Number(fields[11]) + Number(fields[12]);
  return (own + (children ? Number(fields[13]) + Number(fields[14]) : 0)) / ticksPerSecond;
}

/** CPU seconds of PostgreSQL: its postmaster, its live backends, and the backends that have ended. */
export async function postgresSeconds(postmasterPid: number): Promise<number> {
  let total = await cpuSeconds(postmasterPid, true);
  for (const name of await readdir("/proc")) {
    if (!/^\d+$/.test(name)) {
      continue;
    }
    const stat = await readFile(`/proc/${name}/stat`, "utf8").catch(() => undefined);
    const fields = stat?.split(") ")[1]?.split(" ");
    if (fields !== undefined && Number(fields[1]) === postmasterPid) {
      total += (Number(fields[11]) + Number(fields[12])) / ticksPerSecond;
    }
  }
  return total;
}

/** Busy CPU seconds of the whole machine, all cores together. */
async function machineSeconds(): Promise<number> {
  const [cpu] = (await readFile("/proc/stat", "utf8")).split("\n");
  const ticks = cpu!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal: everything but idle and iowait.
  const busy = ticks.slice(0, 8).reduce((n, t) => n + t, 0) - ticks[3]! - ticks[4]!;
  return busy / ticksPerSecond;
}

/** Read and write system calls a process has made so far. */
async function syscalls(pid: number): Promise<{ reads: number; writes: number }> {
  const io = await readFile(`/proc/${pid}/io`, "utf8");
  return { reads: Number(/syscr: (\d+)/.exec(io)![1]), writes: Number(/syscw: (\d+)/.exec(io)![1]) };
}

/** CPU seconds used over an interval, by whom. */
export interface CpuUse {
  /** The server under test. */
  server: number;
  /** The server's read and write system calls (sockets included). */
  serverReads: number;
  serverWrites: number;
  /** This process: the load's callers. */
  client: number;
  /** PostgreSQL. */
  postgres: number;
  /** Everything else on the machine (other people's work, other idle processes). */
  others: number;
}

/** Starts measuring; the returned function says what was used since. */
export async function startCpuMeter(serverPid: number, postmasterPid: number): Promise<() => Promise<CpuUse>> {
  const read = async () => ({
    server: await cpuSeconds(serverPid),
    io: await syscalls(serverPid),
    client: process.cpuUsage(),
    postgres: await postgresSeconds(postmasterPid),
    machine: await machineSeconds(),
  });
  const before = await read();
  return async () => {
    const after = await read();
    const client = process.cpuUsage(before.client);
    const use = {
      server: after.server - before.server,
      serverReads: after.io.reads - before.io.reads,
      serverWrites: after.io.writes - before.io.writes,
      client: (client.user + client.system) / 1e6,
      postgres: after.postgres - before.postgres,
    };
    return { ...use, others: Math.max(0, after.machine - before.machine - use.server - use.client - use.postgres) };
  };
}
