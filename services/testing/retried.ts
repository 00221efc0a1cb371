import { Code, ConnectError } from "@connectrpc/connect";
import { setTimeout as sleep } from "node:timers/promises";

/**
 * Retries a call while it fails UNAVAILABLE, for up to 30 s: after a move
 * or a Platform restart a service may hold a tenant's old route until the
 * change feed reaches it, and the old database refuses the tenant
 * meanwhile. Any other error, or UNAVAILABLE past the deadline, is thrown.
 */
export async function retried<T>(call: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      return await call();
    } catch (error) {
      if (ConnectError.from(error).code !== Code.Unavailable || Date.now() > deadline) {
        throw error;
      }
      await sleep(100);
    }
  }
}
