import { Transform, type TransformCallback } from "node:stream";
import { Worker } from "node:worker_threads";

/** What a compression thread is sent: a block to gzip, by id. */
export interface GzipBlock {
  id: number;
  block: ArrayBuffer;
  length: number;
}

/** What it answers: the block as a gzip member, and the block's memory handed back to be filled again; or why not. */
export type GzippedBlock = { id: number; member: ArrayBuffer; block: ArrayBuffer } | { id: number; error: string };

/** Options of {@link BackgroundGzip}. */
export interface BackgroundGzipOptions {
  /** Threads that compress at once, for all the streams together. */
  threads: number;
  /** Raw bytes per gzip member: a stream is gzipped in blocks of this size. */
  blockBytes?: number;
}

/** Blocks a stream has sent and not yet passed on; more wait. Two keep a thread busy while the next block fills. */
const blocksInFlight = 2;

/** Blocks' memory kept to be filled again, at most: enough for a few streams at once. */
const spareBlocks = 8;

/**
 * Gzip (level 1) on threads of its own that run at a low scheduling
 * priority (on Linux), so that a backup compresses with the CPU the
 * tenants being served leave, rather than take theirs: compression is most
 * of a backup's CPU. A stream made by {@link stream} cuts what goes
 * through it into blocks and passes on each as a gzip member: consecutive
 * members are one gzip file to every reader (gunzip, `gzip -d`).
 */
export class BackgroundGzip {
  readonly #threads: number;
  readonly #blockBytes: number;
  readonly #workers: Worker[] = [];
  readonly #pending = new Map<number, { resolve: (member: Buffer) => void; reject: (error: Error) => void }>();
  /**
   * Blocks' memory back from the threads, filled again rather than freed:
   * memory outside the JavaScript heap counts toward V8's next full
   * collection, and a new block for every megabyte read had Platform mark
   * its whole heap several times a backup (CPU taken from the tenants served).
   */
  readonly #spare: ArrayBuffer[] = [];
  #nextId = 0;
  #closed = false;

  constructor(options: BackgroundGzipOptions) {
    this.#threads = Math.max(1, options.threads);
    this.#blockBytes = options.blockBytes ?? 1024 * 1024;
  }

  /** A transform that gzips what goes through it. */
  stream(): Transform {
    let block = this.#block();
    let filled = 0;
    let sent = 0;
    const inFlight: Promise<Buffer>[] = [];
    const send = () => {
      sent++;
      const member = this.#compress(block, filled);
      // Awaited in order below; a failure met before then is not an unhandled one.
      member.catch(() => undefined);
      inFlight.push(member);
      block = this.#block();
      filled = 0;
    };
    /** Passes on the members of the oldest blocks until at most `keep` are in flight. */
    const passOn = async (keep: number) => {
      while (inFlight.length > keep) {
        stream.push(await inFlight.shift()!);
      }
    };
    const stream = new Transform({
      transform: (chunk: Buffer, _encoding, done: TransformCallback) => {
        for (let at = 0; at < chunk.length; ) {
          const n = chunk.copy(block, filled, at);
          filled += n;
          at += n;
          if (filled === block.length) {
            send();
          }
        }
        passOn(blocksInFlight - 1).then(() => done(), done);
      },
      flush: (done: TransformCallback) => {
        // An empty stream is one empty member: a gzip file still.
        if (filled > 0 || sent === 0) {
          send();
        }
        passOn(0).then(() => done(), done);
      },
    });
    return stream;
  }

  /** Stops the threads; blocks under way fail. */
  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all(this.#workers.splice(0).map((worker) => worker.terminate()));
  }

  /** A block to fill: spare memory if there is some. */
  #block(): Buffer {
    const spare = this.#spare.pop();
    return spare === undefined ? Buffer.allocUnsafeSlow(this.#blockBytes) : Buffer.from(spare);
  }

  /** Gzips the first `length` bytes of `block` on one of the threads (the block is handed over, not copied). */
  #compress(block: Buffer, length: number): Promise<Buffer> {
    if (this.#closed) {
      return Promise.reject(new Error("backup compression has stopped: Platform is shutting down"));
    }
    const id = this.#nextId++;
    const worker = this.#worker(id % this.#threads);
    return new Promise<Buffer>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      const message: GzipBlock = { id, block: block.buffer as ArrayBuffer, length };
      worker.postMessage(message, [block.buffer as ArrayBuffer]);
    });
  }

  /** The thread of `slot`, started when first needed (and again if it ended). */
  #worker(slot: number): Worker {
    const running = this.#workers[slot];
    if (running !== undefined) {
      return running;
    }
    const worker = new Worker(new URL("./background-gzip-worker.ts", import.meta.url));
    // It never keeps Platform from exiting.
    worker.unref();
    worker.on("message", (answer: GzippedBlock) => {
      const waiting = this.#pending.get(answer.id);
      this.#pending.delete(answer.id);
      if ("error" in answer) {
        waiting?.reject(new Error(`backup compression failed: ${answer.error}`));
      } else {
        if (this.#spare.length < spareBlocks && answer.block.byteLength === this.#blockBytes) {
          this.#spare.push(answer.block);
        }
        waiting?.resolve(Buffer.from(answer.member));
      }
    });
    const ended = (error?: Error) => {
      if (this.#workers[slot] === worker) {
        delete this.#workers[slot];
      }
      // Its blocks are lost with it; every block still pending may be one of them.
      for (const [id, waiting] of this.#pending) {
        if (id % this.#threads === slot) {
          this.#pending.delete(id);
          waiting.reject(error ?? new Error("backup compression stopped"));
        }
      }
    };
    worker.on("error", ended);
    worker.on("exit", () => ended());
    this.#workers[slot] = worker;
    return worker;
  }
}
