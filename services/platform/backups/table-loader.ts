import type { Readable } from "node:stream";
import type { Worker } from "node:worker_threads";
import type { TenantConnection } from "./table-reader.ts";
import { WarmThreads } from "./warm-threads.ts";

/** What one table's load is told: how to empty and load it, and how its file opens. */
export interface TableLoad {
  /** `TRUNCATE` of the table. */
  truncate: string;
  /** `COPY … FROM STDIN (FORMAT binary, FREEZE)` of the table. */
  sql: string;
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
  | { type: "failed"; message: string; code?: string };

/** Chunks of a file sent ahead of what the thread has taken. */
export const loaderChunksAhead = 4;

/** Loaders' threads kept started between restores. */
const threads = new WarmThreads(new URL("./table-loader-worker.ts", import.meta.url), 2);

/**
 * A connection of a restore's load on a thread of its own: for each table,
 * in a transaction, it empties it, opens its file (decrypts, checking the
 * auth tag), gunzips it, hashes it and COPYs it in, frozen; this thread
 * only reads the file from storage and passes its bytes on. The work and
 * the garbage of a load are the thread's, whose heap is small, rather than
 * this one's, whose collections would be long. A failure in the thread is
 * thrown here with its message and code (a database error's SQLSTATE, a
 * zlib error's).
 */
export class TableLoader {
  readonly #worker: Worker;
  #waiting: { resolve: (answer: LoaderAnswer) => void; reject: (error: Error) => void } | undefined;
  #inFlight = 0;
  #taken: () => void = () => {};
  #ended: Error | undefined;
  /** Handed back to be used again, once closed. */
  #released = false;

  constructor() {
    this.#worker = threads.take({
      message: (answer: LoaderAnswer) => this.#answer(answer),
      ended: (error?: Error) => {
        this.#ended ??= error ?? new Error("the restore's loading thread stopped");
        this.#fail(this.#ended);
      },
    });
  }

  /** Connects, its commits not waiting for the WAL to reach the disk (the load's last transaction does). */
  async open(connection: TenantConnection): Promise<void> {
    await this.#ask({ type: "open", connection });
  }

  /** Loads one table from `file` in a transaction of its own; resolves with the rows and the digest loaded. */
  async load(file: Readable, table: TableLoad): Promise<{ rows: number; sha256: string }> {
    let settled = false;
    const done = this.#ask({ type: "load", ...table, key: new Uint8Array(table.key) }).finally(() => {
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
        // The chunk's memory handed over; copied when it is shared with other buffers.
        const owned = (chunk.byteOffset === 0 && chunk.byteLength === chunk.buffer.byteLength ? chunk.buffer : chunk.buffer.slice(chunk.byteOffset, chunk.byteOffset + chunk.byteLength)) as ArrayBuffer;
        this.#worker.postMessage({ type: "chunk", chunk: owned } satisfies LoaderRequest, [owned]);
        this.#inFlight++;
        while (this.#inFlight >= loaderChunksAhead && !settled) {
          await new Promise<void>((resolve) => (this.#taken = resolve));
        }
      }
      if (!settled) {
        this.#worker.postMessage({ type: "end" } satisfies LoaderRequest);
      }
    } catch (error) {
      // The file could not be read: the load fails with that.
      if (!settled) {
        this.#worker.postMessage({ type: "abort", message: (error as Error).message } satisfies LoaderRequest);
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
    await this.#ask({ type: "close" });
    this.#released = true;
    threads.give(this.#worker);
  }

  /** Stops the thread, cutting its connection (and rolling back the load under way); nothing once closed. */
  async abort(): Promise<void> {
    if (this.#released) {
      return;
    }
    this.#ended ??= new Error("the load stopped");
    await this.#worker.terminate();
  }

  #ask(request: LoaderRequest): Promise<LoaderAnswer> {
    if (this.#ended !== undefined) {
      return Promise.reject(this.#ended);
    }
    return new Promise((resolve, reject) => {
      this.#waiting = { resolve, reject };
      this.#worker.postMessage(request);
    });
  }

  #answer(answer: LoaderAnswer): void {
    if (answer.type === "more") {
      this.#inFlight--;
      this.#taken();
      return;
    }
    if (answer.type === "failed") {
      this.#fail(Object.assign(new Error(answer.message), answer.code === undefined ? {} : { code: answer.code }));
      return;
    }
    const waiting = this.#waiting;
    this.#waiting = undefined;
    waiting?.resolve(answer);
  }

  #fail(error: Error): void {
    const waiting = this.#waiting;
    this.#waiting = undefined;
    waiting?.reject(error);
  }
}
