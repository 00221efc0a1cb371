import pg from "pg";
import { inject } from "vitest";

/**
 * The tests' PostgreSQL server, reached as its superuser: the URL of any of
 * its databases, and SQL run in them over a small pool per database.
 */
export class TestServer {
  /** Superuser URL of the server's `postgres` database. */
  readonly url: URL;
  readonly #pools = new Map<string, pg.Pool>();

  /** `url` names a server other than the tests' shared one (a server a spec restarts, say). */
  constructor(url: string | undefined = inject("databaseUrl")) {
    if (url === undefined) {
      // Only the medium and e2e projects start it (see vitest.config.ts).
      throw new Error("no PostgreSQL for this spec: name it x.db.spec.ts (medium tier) or put it in e2e/");
    }
    this.url = new URL(url);
  }

  /** Superuser URL of a database on the server. */
  databaseUrl(database: string): string {
    const url = new URL(this.url);
    url.pathname = `/${database}`;
    return url.toString();
  }

  /** Runs SQL as the superuser in a database of the server. */
  async sql<R extends pg.QueryResultRow = Record<string, unknown>>(database: string, text: string, values?: unknown[]): Promise<R[]> {
    let pool = this.#pools.get(database);
    if (pool === undefined) {
      pool = new pg.Pool({ connectionString: this.databaseUrl(database), max: 2 });
      // An idle connection that breaks (a spec restarting its server) must not end the test process.
      pool.on("error", () => {});
      this.#pools.set(database, pool);
    }
    return (await pool.query<R>(text, values)).rows;
  }

  /** Closes every connection. */
  async close(): Promise<void> {
    await Promise.all([...this.#pools.values()].map((pool) => pool.end()));
    this.#pools.clear();
  }
}
