import { once } from "node:events";
import net from "node:net";

/** A running {@link startLateCloseProxy}. */
export interface LateCloseProxy {
  port: number;
  close(): Promise<void>;
}

/**
 * A TCP proxy on the loopback interface that passes bytes both ways at once
 * but passes the server's close only `delayMs` later, as a slow network may:
 * a client then reads the server's last words (a FATAL error, say) well
 * before it learns that the connection is gone.
 */
export async function startLateCloseProxy(target: { host: string; port: number }, delayMs: number): Promise<LateCloseProxy> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(target.port, target.host);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on("close", () => sockets.delete(socket));
      socket.on("error", () => socket.destroy());
    }
    client.on("data", (chunk) => upstream.write(chunk));
    upstream.on("data", (chunk) => client.write(chunk));
    client.on("end", () => upstream.end());
    upstream.on("close", () => setTimeout(() => client.end(), delayMs));
    client.on("close", () => upstream.destroy());
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return {
    port: (server.address() as net.AddressInfo).port,
    async close() {
      sockets.forEach((socket) => socket.destroy());
      server.close();
      await once(server, "close");
    },
  };
}
