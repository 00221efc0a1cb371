import { Code, ConnectError } from "@connectrpc/connect";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { TenantStatus } from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import { isDatabaseUnreachable, type Logger } from "../mesh/index.ts";

/** One change to a tenant, as announced by the registry's trigger. */
export interface TenantChange {
  tenantId: string;
  status: TenantStatus;
}

const channel = "tenantry_tenant_changes";
/** A watcher this far behind is cut off; it reconnects and starts afresh. */
const maxBacklog = 10_000;
/** While the database is unreachable, listening is tried again this often at most (first and longest wait). */
const relisten = { initial: 50, max: 250 };

interface Watcher {
  queue: TenantChange[];
  wake: (() => void) | undefined;
  failure: ConnectError | undefined;
}

/**
 * Every committed change to a tenant, from PostgreSQL's LISTEN/NOTIFY on
 * the platform database (a trigger on `platform.tenants` announces them), so
 * that each Platform instance can stream the changes any instance made.
 */
export class TenantChangeFeed {
  readonly #connectionString: string;
  readonly #log: Logger;
  readonly #watchers = new Set<Watcher>();
  #client: Promise<pg.Client> | undefined;
  #closed = false;

  constructor(options: { connectionString: string; log: Logger }) {
    this.#connectionString = options.connectionString;
    this.#log = options.log;
  }

  /**
   * Streams changes until `signal` aborts. The first value has an empty
   * tenant id and comes once listening has begun: from then on nothing is
   * missed. While the database is unreachable, that first value waits for
   * it. Ends with UNAVAILABLE when the feed loses its connection.
   */
  async *watch(signal: AbortSignal): AsyncGenerator<TenantChange> {
    if (this.#closed) {
      throw new ConnectError("Platform is shutting down; reconnect to another instance", Code.Unavailable);
    }
    await this.#listening(signal);
    if (signal.aborted) {
      return;
    }
    const watcher: Watcher = { queue: [], wake: undefined, failure: undefined };
    this.#watchers.add(watcher);
    const onAbort = () => watcher.wake?.();
    signal.addEventListener("abort", onAbort);
    try {
      // Listening may have been lost again while this watcher was not yet counted.
      await this.#listen();
      yield { tenantId: "", status: TenantStatus.UNSPECIFIED };
      while (!signal.aborted) {
        if (watcher.failure !== undefined) {
          throw watcher.failure;
        }
        const next = watcher.queue.shift();
        if (next !== undefined) {
          yield next;
          continue;
        }
        await new Promise<void>((resolve) => (watcher.wake = resolve));
        watcher.wake = undefined;
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
      this.#watchers.delete(watcher);
    }
  }

  /** Stops listening and ends every watch. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#failAll(new ConnectError("Platform is shutting down; reconnect to another instance", Code.Unavailable));
    const client = this.#client;
    this.#client = undefined;
    await client?.then((c) => c.end()).catch(() => undefined);
  }

  /**
   * Resolves once the feed listens, trying again while the database is
   * unreachable (a restart), so that a watcher is connected as soon as the
   * database is back rather than after its own backoff.
   */
  async #listening(signal: AbortSignal): Promise<void> {
    for (let wait = relisten.initial; !signal.aborted; wait = Math.min(wait * 2, relisten.max)) {
      try {
        await this.#listen();
        return;
      } catch (error) {
        if (!isDatabaseUnreachable(error)) {
          throw error;
        }
      }
      await sleep(wait, undefined, { signal }).catch(() => undefined);
    }
  }

  #listen(): Promise<pg.Client> {
    if (this.#closed) {
      return Promise.reject(new ConnectError("Platform is shutting down; reconnect to another instance", Code.Unavailable));
    }
    if (this.#client === undefined) {
      const client = new pg.Client({ connectionString: this.#connectionString, application_name: "tenantry-platform-feed" });
      const listening = client
        .connect()
        .then(() => client.query(`listen ${channel}`))
        .then(() => client);
      this.#client = listening;
      let listened = false;
      void listening.then(() => (listened = true), () => undefined);
      const lost = (error: unknown) => {
        if (this.#client === listening) {
          this.#client = undefined;
          void client.end().catch(() => undefined);
          if (listened) {
            this.#log.warn({ err: error }, "tenant change feed lost its connection");
          } else {
            // Tried again shortly while the database is unreachable: not worth a warning each time.
            this.#log.debug({ err: error }, "tenant change feed could not listen");
          }
          this.#failAll(new ConnectError("Platform lost its change feed; reconnect", Code.Unavailable));
        }
      };
      client.on("error", lost);
      client.on("end", () => lost(new Error("connection ended")));
      listening.catch(lost);
      client.on("notification", (message) => {
        const [tenantId, status] = (message.payload ?? "").split(" ");
        if (tenantId === undefined || tenantId === "") {
          return;
        }
        const change = { tenantId, status: TenantStatus[(status ?? "").toUpperCase() as keyof typeof TenantStatus] ?? TenantStatus.UNSPECIFIED };
        for (const watcher of this.#watchers) {
          if (watcher.queue.length >= maxBacklog) {
            watcher.failure ??= new ConnectError("watcher fell too far behind; reconnect", Code.ResourceExhausted);
          } else {
            watcher.queue.push(change);
          }
          watcher.wake?.();
        }
      });
    }
    return this.#client;
  }

  #failAll(error: ConnectError): void {
    for (const watcher of this.#watchers) {
      watcher.failure ??= error;
      watcher.wake?.();
    }
  }
}
