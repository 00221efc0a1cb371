import type { Readable } from "node:stream";
import type { BackupCompression } from "./compressed-blocks.ts";
import type { TenantConnection } from "./table-reader.ts";
import { handedOver, ThreadConversation, type ThreadFailure } from "./thread-conversation.ts";
import { WarmThreads } from "./warm-threads.ts";

/** What one table's load is told: how to empty and load it, and how its file opens. */
export interface TableLoad {
  /** `TRUNCATE` of the table. */
  truncate: string;
  /** `COPY … FROM STDIN (FORMAT binary, FREEZE)` of the table. */
  sql: string;
  /** How the file is compressed. */
  compression: BackupCompression;
  key: Buffer;
  context: string;
  /** The file, as errors name it. */
  what: string;
}

/** What a loader's thread is asked. */
export type LoaderRequest =
  | { type: "open"; connection: TenantConnection }
  | ({ type: "load" } & Omit<TableLoad, "key"> & { key: Uint8Array })
  | { type: "chunk"; chunk: ArrayBuffer }
  | { type: "end" }
  | { type: "abort"; message: string }
  | { type: "close" };

/** What it answers. */
export type LoaderAnswer =
  | { type: "opened" }
  | { type: "more" }
  | { type: "loaded"; rows: number; sha256: string }
  | { type: "closed" }
  | ThreadFailure;

/** Chunks of a file sent ahead of what the thread has taken. */
export const loaderChunksAhead = 4;

/** Loaders' threads kept started between restores. */
const threads = new WarmThreads(new URL("./table-loader-worker.ts", import.meta.url), 2);

/**
 * A connection of a restore's load on a thread of its own: for each table,
 * in a transaction, it empties it, opens its file (decrypts, checking the
 * auth tag), decompresses it, hashes it and COPYs it in, frozen; this thread
 * only reads the file from storage and passes its bytes on. The work and
 * the garbage of a load are the thread's, whose heap is small, rather than
 * this one's, whose collections would be long. A failure in the thread is
 * thrown here with its message and code (a database error's SQLSTATE, a
 * zlib or zstd error's).
 */
export class TableLoader {
  readonly #thread: ThreadConversation<LoaderRequest, LoaderAnswer>;
  #inFlight = 0;
  #taken: () => void = () => {};

  constructor() {
    this.#thread = new ThreadConversation<LoaderRequest, LoaderAnswer>(threads, "the restore's loading thread stopped", {
      streamed: (answer) => {
        if (answer.type !== "more") {
          return false;
        }
        this.#inFlight--;
        this.#taken();
        return true;
      },
    });
  }

  /** Connects, its commits not waiting for the WAL to reach the disk (the load's last transaction does). */
  async open(connection: TenantConnection): Promise<void> {
    await this.#thread.ask({ type: "open", connection });
  }

  /** Loads one table from `file` in a transaction of its own; resolves with the rows and the digest loaded. */
  async load(file: Readable, table: TableLoad): Promise<{ rows: number; sha256: string }> {
    let settled = false;
    const done = this.#thread.ask({ type: "load", ...table, key: new Uint8Array(table.key) }).finally(() => {
      settled = true;
      this.#taken();
    });
    done.catch(() => undefined);
    this.#inFlight = 0;
    try {
      for await (const chunk of file as AsyncIterable<Buffer>) {
        if (settled) {
          break;
        }
        const owned = handedOver(chunk);
        this.#thread.tell({ type: "chunk", chunk: owned }, [owned]);
        this.#inFlight++;
        while (this.#inFlight >= loaderChunksAhead && !settled) {
          await new Promise<void>((resolve) => (this.#taken = resolve));
        }
      }
      if (!settled) {
        this.#thread.tell({ type: "end" });
      }
    } catch (error) {
      // The file could not be read: the load fails with that.
      if (!settled) {
        this.#thread.tell({ type: "abort", message: (error as Error).message });
      }
      await done.catch(() => undefined);
      throw error;
    } finally {
      file.destroy();
    }
    return (await done) as { rows: number; sha256: string };
  }

  /** Ends the connection; the thread is kept for another restore. */
  async close(): Promise<void> {
    await this.#thread.close({ type: "close" });
  }

  /** Stops the thread, cutting its connection (and rolling back the load under way); nothing once closed. */
  async abort(): Promise<void> {
    await this.#thread.abort("the load stopped");
  }
}
