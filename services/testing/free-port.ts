import net from "node:net";
import { randomInt } from "node:crypto";

/**
 * Ports handed out below the kernel's ephemeral range (32768 and up by
 * default on Linux): a port from that range, once closed, can be taken by
 * any outgoing connection's source port before the test binds it.
 */
const range = { from: 20_000, to: 32_000 };

/** Whether a TCP port can be listened on, on the loopback interface, now. */
function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

/** A TCP port that was free a moment ago on the loopback interface (chosen at random, so that parallel test files rarely meet). */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = randomInt(range.from, range.to);
    if (await bindable(port)) {
      return port;
    }
  }
}
