import { readFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

/**
 * Crashes the embedded PostgreSQL server kept in `dir` (see
 * `startEmbeddedDatabase`) the way `pg_ctl stop -m immediate` stops one:
 * SIGQUIT to the postmaster, whose connections end without a goodbye and whose
 * next start runs crash recovery. Resolves once `port` refuses connections.
 * Start it again with `startEmbeddedDatabase` on the same directory and
 * port; do not stop the crashed instance, whose process is gone.
 */
export async function crashDatabase(dir: string, port: number): Promise<void> {
  const pid = Number((await readFile(path.join(dir, "data", "postmaster.pid"), "utf8")).split("\n")[0]);
  if (!Number.isInteger(pid) || pid <= 0) {
    throw new Error(`no postmaster pid in ${dir}/data/postmaster.pid`);
  }
  process.kill(pid, "SIGQUIT");
  const deadline = Date.now() + 30_000;
  while (await accepts(port)) {
    if (Date.now() > deadline) {
      throw new Error(`PostgreSQL (pid ${pid}) still accepts connections on port ${port} 30 s after SIGQUIT`);
    }
    await sleep(10);
  }
}

/** Whether something accepts TCP connections on the loopback port. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}
