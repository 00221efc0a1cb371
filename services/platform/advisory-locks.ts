import type { EntityManager } from "@mikro-orm/postgresql";
import pg from "pg";
import { watchConnectionLoss, type Logger } from "../mesh/index.ts";

/** The class of every advisory lock Platform takes: a key is a name hashed within it. */
const lockClass = 7351;

/**
 * Takes the lock named `key` until the transaction `em` runs ends, waiting
 * for whoever holds it: for work that two Platform instances must never do
 * at once, such as placing tenants on clusters.
 */
export async function lockForTransaction(em: EntityManager, key: string): Promise<void> {
  await em.execute(`select pg_advisory_xact_lock(${lockClass}, hashtext(?))`, [key]);
}

/**
 * PostgreSQL session advisory locks on the platform database, held on one
 * connection of this process: two Platform instances never work on the same
 * tenant at once, and a process that dies (even by `kill -9`) frees its
 * locks with its session.
 */
export class AdvisoryLocks {
  readonly #config: pg.ClientConfig;
  readonly #log: Logger;
  #client: Promise<pg.Client> | undefined;
  /** The connection runs one query at a time: each waits for the previous. */
  #queue: Promise<unknown> = Promise.resolve();

  constructor(options: { connectionString: string; log: Logger }) {
    this.#config = { connectionString: options.connectionString, application_name: "tenantry-platform-locks" };
    this.#log = options.log;
  }

  /** Takes the lock named `key` if no other session holds it; returns whether it did. */
  async tryLock(key: string): Promise<boolean> {
    const rows = await this.#query<{ locked: boolean }>(`select pg_try_advisory_lock(${lockClass}, hashtext($1)) as locked`, key);
    return rows[0]!.locked;
  }

  /** Releases a lock this process holds. */
  async unlock(key: string): Promise<void> {
    await this.#query(`select pg_advisory_unlock(${lockClass}, hashtext($1))`, key);
  }

  #query<R extends pg.QueryResultRow>(text: string, key: string): Promise<R[]> {
    const run = this.#queue.then(async () => (await (await this.#connection()).query<R>(text, [key])).rows);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  /** Closes the connection, releasing every lock. */
  async close(): Promise<void> {
    const client = this.#client;
    this.#client = undefined;
    await client?.then((c) => c.end()).catch(() => undefined);
  }

  #connection(): Promise<pg.Client> {
    if (this.#client === undefined) {
      const client = new pg.Client(this.#config);
      const connecting = client.connect().then(() => client);
      this.#client = connecting;
      // A lost connection is replaced by the next query (after a database restart, say).
      watchConnectionLoss(client, (error) => {
        if (this.#client === connecting) {
          this.#client = undefined;
          this.#log.error({ err: error }, "the advisory lock connection failed; the locks it held are gone");
        }
      });
      connecting.catch(() => {
        if (this.#client === connecting) {
          this.#client = undefined;
        }
      });
    }
    return this.#client;
  }
}
