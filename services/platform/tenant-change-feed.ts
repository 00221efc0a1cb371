import { Code, ConnectError } from "@connectrpc/connect";
import { setTimeout as sleep } from "node:timers/promises";
import type { EntityManager } from "@mikro-orm/postgresql";
import pg from "pg";
import { TenantStatus } from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import { isDatabaseUnreachable, type Logger, type WriteFreezeNotice } from "../mesh/index.ts";

/** One change to a tenant, as announced by the registry's trigger, or a write freeze of it. */
export interface TenantChange {
  tenantId: string;
  /** Its status; unspecified in a message that announces a freeze. */
  status: TenantStatus;
  /** In the first message, to a watcher of freezes: those in force. */
  freezes?: WriteFreezeNotice[];
  /** To a watcher of freezes: a freeze of the tenant began, was renewed or ended (a lease of 0). */
  freeze?: WriteFreezeNotice;
}

const channel = "tenantry_tenant_changes";
/** How a freeze's announcement begins; no tenant id has a colon. */
const freezePrefix = "freeze:";

/**
 * Announces a write freeze of a tenant (begun, renewed, or ended with a
 * lease of 0) on the change feed, once the transaction `em` runs commits:
 * in order with the tenants' changes, so that a route switched before a
 * thaw reaches every service before the thaw does.
 */
export async function announceWriteFreeze(em: EntityManager, notice: WriteFreezeNotice): Promise<void> {
  await em.execute("select pg_notify(?, ?)", [channel, `${freezePrefix}${notice.tenantId}:${notice.freezeId}:${Math.max(0, Math.ceil(notice.leaseMs))}`]);
}

/** A freeze's announcement read back; undefined for anything else. */
function readFreezeAnnouncement(payload: string): WriteFreezeNotice | undefined {
  if (!payload.startsWith(freezePrefix)) {
    return undefined;
  }
  const [tenantId, freezeId, leaseMs] = payload.slice(freezePrefix.length).split(":");
  if (tenantId === undefined || freezeId === undefined || leaseMs === undefined) {
    return undefined;
  }
  return { tenantId, freezeId, leaseMs: Number(leaseMs) };
}
/** A watcher this far behind is cut off; it reconnects and starts afresh. */
const maxBacklog = 10_000;
/** While the database is unreachable, listening is tried again this often at most (first and longest wait). */
const relisten = { initial: 50, max: 250 };

interface Watcher {
  /** Whether it hears of write freezes. */
  freezes: boolean;
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
   * it. Ends with UNAVAILABLE when the feed loses its connection. With
   * `freezesInForce`, write freezes are streamed too, and the first value
   * lists those in force, read once listening has begun.
   */
  async *watch(signal: AbortSignal, options: { freezesInForce?: () => Promise<WriteFreezeNotice[]> } = {}): AsyncGenerator<TenantChange> {
    if (this.#closed) {
      throw new ConnectError("Platform is shutting down; reconnect to another instance", Code.Unavailable);
    }
    await this.#listening(signal);
    if (signal.aborted) {
      return;
    }
    const watcher: Watcher = { freezes: options.freezesInForce !== undefined, queue: [], wake: undefined, failure: undefined };
    this.#watchers.add(watcher);
    const onAbort = () => watcher.wake?.();
    signal.addEventListener("abort", onAbort);
    try {
      // Listening may have been lost again while this watcher was not yet counted.
      await this.#listen();
      // Read once counted: a freeze made meanwhile is in the list, in the queue, or both (the same twice is harmless).
      const freezes = options.freezesInForce === undefined ? [] : await options.freezesInForce();
      yield { tenantId: "", status: TenantStatus.UNSPECIFIED, freezes };
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
        const payload = message.payload ?? "";
        const freeze = readFreezeAnnouncement(payload);
        const [tenantId, status] = freeze === undefined ? payload.split(" ") : [freeze.tenantId];
        if (tenantId === undefined || tenantId === "") {
          return;
        }
        const change: TenantChange =
          freeze === undefined
            ? { tenantId, status: TenantStatus[(status ?? "").toUpperCase() as keyof typeof TenantStatus] ?? TenantStatus.UNSPECIFIED }
            : { tenantId, status: TenantStatus.UNSPECIFIED, freeze };
        for (const watcher of this.#watchers) {
          if (freeze !== undefined && !watcher.freezes) {
            continue;
          }
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
