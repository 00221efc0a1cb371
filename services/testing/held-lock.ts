import pg from "pg";
import { setTimeout as sleep } from "node:timers/promises";

/** A lock a test holds in a database of its own connection, so that calls queue up behind it. */
export interface HeldLock {
  /** Resolves once, for each pattern, some connection to the database waits for a lock while running a query it matches. */
  waitingFor(queries: RegExp[]): Promise<void>;
  /** Ends the transaction, and with it the lock. */
  release(): Promise<void>;
}

/** Takes a lock with `lockSql` in a transaction on `url` and holds it until released. */
export async function holdLock(url: string, lockSql: string): Promise<HeldLock> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  await client.query("begin");
  await client.query(lockSql);
  return {
    async waitingFor(queries) {
      for (;;) {
        // Inside a transaction, activity is read once unless the snapshot is dropped.
        await client.query("select pg_stat_clear_snapshot()");
        const { rows } = await client.query<{ query: string }>(
          "select query from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock' and pid <> pg_backend_pid()",
        );
        if (queries.every((pattern) => rows.some((r) => pattern.test(r.query)))) {
          return;
        }
        await sleep(10);
      }
    },
    async release() {
      await client.query("commit");
      await client.end();
    },
  };
}
