import { open } from "node:fs/promises";
import { Readable } from "node:stream";
import pg from "pg";
import type { SharedPace } from "./backup-pace.ts";
import { compressedBlockBytes, type BackupCompression } from "./compressed-blocks.ts";
import { ThreadConversation, type ThreadFailure } from "./thread-conversation.ts";
import { WarmThreads } from "./warm-threads.ts";

/**
 * How a backup reaches a tenant's database, as a thread of its own can use
 * it: the client's settings (plain values, database and login included)
 * and, for a pooled tenant, the role taken on at once (see `connectAs`).
 */
export interface TenantConnection {
  config: pg.ClientConfig;
  sessionRole: string;
}

/** Opens a connection as `connection` says; the caller ends it. */
export async function connectTo(connection: TenantConnection): Promise<pg.Client> {
  const client = new pg.Client(connection.config);
  // Its failure surfaces through the query in flight; unheard, the event would end the process (or thread).
  client.on("error", () => {});
  await client.connect();
  if (connection.sessionRole !== "") {
    try {
      await client.query(`set role ${pg.escapeIdentifier(connection.sessionRole)}`);
    } catch (error) {
      await client.end().catch(() => undefined);
      throw error;
    }
  }
  return client;
}

/** What one table's read is told: its COPY, how to compress it, its key and context to seal with, and the backup's pace. */
export interface TableRead {
  /** `COPY … TO STDOUT (FORMAT binary)` of the table. */
  sql: string;
  compression: BackupCompression;
  key: Buffer;
  context: string;
  pace: SharedPace;
}

/** What a reader's thread is asked. */
export type ReaderRequest =
  | { type: "open"; connection: TenantConnection; snapshot: string }
  | ({ type: "copy"; blockBytes: number; fd?: number } & Omit<TableRead, "key"> & { key: Uint8Array })
  | { type: "more" }
  | { type: "close" };

/** What it answers. */
export type ReaderAnswer =
  | { type: "opened" }
  | { type: "data"; chunk: ArrayBuffer }
  | { type: "copied"; rows: number; sha256: string; storedBytes?: number }
  | { type: "closed" }
  | ThreadFailure;

/** Sealed chunks a thread sends ahead of what storage has taken. */
export const chunksAhead = 4;

/** Readers' threads kept started between backups: enough for a few backups' connections. */
const threads = new WarmThreads(new URL("./table-reader-worker.ts", import.meta.url), 4);

/**
 * One connection of a backup, read on a thread of its own that runs at a
 * low scheduling priority (on Linux), so that a backup takes the CPU the
 * tenants being served leave, rather than theirs: the thread connects,
 * takes up the backup's snapshot, and for each table reads its binary
 * COPY, holds it to the pace, hashes it, compresses it (zstd level 1, in
 * frames of 1 MiB: consecutive frames are one zstd file) and seals
 * it; this thread sees only the sealed bytes, which it stores, or, when
 * storage keeps the file on this machine, nothing: the reading thread
 * writes it (`readToFile`), so that no work of a backup is left at the
 * process's priority. A failure
 * in the thread is thrown here with its message and code (a database
 * error's SQLSTATE).
 */
export class TableReader {
  readonly #thread: ThreadConversation<ReaderRequest, ReaderAnswer>;
  #sealed: Readable | undefined;
  /** Chunks taken from the thread and not yet read by storage: it is told to send more once they are. */
  #owed = 0;

  constructor() {
    this.#thread = new ThreadConversation<ReaderRequest, ReaderAnswer>(threads, "the backup's reading thread stopped", {
      streamed: (answer) => {
        if (answer.type !== "data") {
          return false;
        }
        if (this.#sealed?.push(Buffer.from(answer.chunk)) === true) {
          this.#thread.tell({ type: "more" });
        } else {
          this.#owed++;
        }
        return true;
      },
      failed: (error) => {
        this.#sealed?.destroy(error);
        this.#sealed = undefined;
      },
    });
  }

  /** Connects and takes up the snapshot, in a read-only repeatable-read transaction. */
  async open(connection: TenantConnection, snapshot: string): Promise<void> {
    await this.#thread.ask({ type: "open", connection, snapshot });
  }

  /** Reads one table: its sealed stream, to store, and its rows and digest once it has ended. */
  read(table: TableRead): { sealed: Readable; done: Promise<{ rows: number; sha256: string }> } {
    const sealed = new Readable({
      read: () => {
        for (; this.#owed > 0; this.#owed--) {
          this.#thread.tell({ type: "more" });
        }
      },
    });
    this.#sealed = sealed;
    this.#owed = 0;
    const done = this.#thread.ask({ type: "copy", blockBytes: compressedBlockBytes, ...table, key: new Uint8Array(table.key) }).then((answer) => {
      sealed.push(null);
      this.#sealed = undefined;
      return answer as { rows: number; sha256: string };
    });
    // The caller awaits it beside the store; a failure met before then is not an unhandled one.
    done.catch(() => undefined);
    return { sealed, done };
  }

  /**
   * Reads one table into the file at `path` (created, mode 0600), written
   * by the thread: its rows, digest and the bytes written. The file is
   * opened and closed here, once the thread has answered or stopped, so
   * that a thread stopped in the middle leaves no descriptor open.
   */
  async readToFile(table: TableRead, path: string): Promise<{ rows: number; sha256: string; storedBytes: number }> {
    const file = await open(path, "w", 0o600);
    try {
      const answer = await this.#thread.ask({ type: "copy", blockBytes: compressedBlockBytes, ...table, key: new Uint8Array(table.key), fd: file.fd });
      const { rows, sha256, storedBytes } = answer as { rows: number; sha256: string; storedBytes: number };
      return { rows, sha256, storedBytes };
    } finally {
      await file.close();
    }
  }

  /** Ends the transaction and the connection; the thread is kept for another backup. */
  async close(): Promise<void> {
    await this.#thread.close({ type: "close" });
  }

  /** Stops the thread, cutting its connection and any read under way (nothing once closed). */
  async abort(): Promise<void> {
    await this.#thread.abort("the backup stopped");
  }
}
