import type pg from "pg";
import { isDatabaseUnreachable } from "./database-unreachable.ts";

/**
 * Calls `onLost` when the connection of `client` is lost: the client reports
 * an error (its socket broke, or the server ended the connection), or a query
 * fails because the connection did. The second matters because a server
 * that ends a connection (a restart, `pg_terminate_backend`) first answers the
 * query in flight with an error and closes the socket a moment later: in
 * between, the connection would look healthy to a pool. `onLost` may be
 * called more than once for one loss.
 *
 * The listener also keeps a lost connection from ending the process: an
 * 'error' event nobody listens to is an uncaught exception, and pg-pool
 * listens only while a connection is idle.
 */
export function watchConnectionLoss(client: pg.ClientBase, onLost: (error: Error) => void): void {
  client.on("error", onLost);
  const query = client.query.bind(client) as (...args: unknown[]) => unknown;
  (client as { query: unknown }).query = (...args: unknown[]) => {
    const result = query(...args);
    // Submittables (cursors) report through the 'error' event of the client as well.
    if (typeof (result as Promise<unknown> | undefined)?.then === "function") {
      (result as Promise<unknown>).then(undefined, (error: unknown) => {
        if (isDatabaseUnreachable(error)) {
          onLost(error as Error);
        }
      });
    }
    return result;
  };
}

/**
 * Makes a pg-pool discard the connections it lends out that get lost.
 * pg-pool itself drops an idle connection that reports an error, and a
 * returned one that pg already knows to be broken, but not one that the
 * server ended while a query ran (see {@link watchConnectionLoss}): its
 * holder's release discards it here. And a connection lost in the middle of
 * a transaction is never returned at all, since Kysely releases a
 * transaction's connection only after its commit or rollback succeeds, so it
 * would hold its place in the pool for good: once such a connection has
 * ended, it is returned as broken on its holder's behalf, and the holder's
 * own release later does nothing.
 */
export function discardLostConnections(pool: pg.Pool, onError: (error: Error) => void = () => {}): void {
  const lent = new Set<pg.PoolClient>();
  pool.on("acquire", (client) => lent.add(client));
  pool.on("release", (_error, client) => lent.delete(client));
  pool.on("connect", (client) => {
    watchConnectionLoss(client, (error) => {
      onError(error);
      if (lent.has(client)) {
        const release = client.release;
        client.release = () => release(error);
      }
    });
    client.on("end", () => {
      if (lent.has(client)) {
        const release = client.release;
        client.release = () => {};
        release(new Error("Connection terminated"));
      }
    });
  });
}
