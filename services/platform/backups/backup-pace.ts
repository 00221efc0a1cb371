import { Transform, type TransformCallback } from "node:stream";

/** How far ahead of its pace a stream may get before it is held: a burst, so that most chunks pass without a timer. */
const slackMs = 50;

/** A pace as it is handed to another thread: its rate, and the memory of when its bytes are due, shared. */
export interface SharedPace {
  bytesPerSecond: number;
  due: SharedArrayBuffer;
}

/**
 * Holds the table streams of one backup to a rate, together: each stream
 * made by {@link through} lets a chunk pass once the bytes before it, in
 * every stream of the pace, are due at `bytesPerSecond`. A backup reads,
 * hashes, compresses and encrypts as fast as it is let through, so its
 * pace bounds the CPU (and the database server's reads) it takes from the
 * tenants served meanwhile. The streams may be on other threads: each
 * takes the pace {@link of} what {@link shared} hands it.
 */
export class BackupPace {
  readonly #bytesPerSecond: number;
  readonly #msPerByte: number;
  /**
   * When the bytes let through so far are due, in microseconds since the
   * epoch (every thread's clock), in memory shared by the threads: taken
   * and moved on atomically, so that no chunk of one thread goes unpaced
   * for one of another's.
   */
  readonly #due: BigInt64Array;

  /** `bytesPerSecond` 0 for no limit. */
  constructor(bytesPerSecond: number, due = new SharedArrayBuffer(BigInt64Array.BYTES_PER_ELEMENT)) {
    this.#bytesPerSecond = bytesPerSecond;
    this.#msPerByte = bytesPerSecond > 0 ? 1000 / bytesPerSecond : 0;
    this.#due = new BigInt64Array(due);
  }

  /** The same pace, on another thread. */
  static of(shared: SharedPace): BackupPace {
    return new BackupPace(shared.bytesPerSecond, shared.due);
  }

  /** What {@link of} takes, to be posted to another thread. */
  get shared(): SharedPace {
    return { bytesPerSecond: this.#bytesPerSecond, due: this.#due.buffer as SharedArrayBuffer };
  }

  /** A pass-through stream holding its chunks to the pace. */
  through(): Transform {
    return new Transform({
      transform: (chunk: Buffer, _encoding, done: TransformCallback) => {
        if (this.#msPerByte === 0) {
          return done(null, chunk);
        }
        const wait = this.#take(chunk.length);
        if (wait <= 0) {
          return done(null, chunk);
        }
        setTimeout(() => done(null, chunk), wait);
      },
    });
  }

  /** Counts `bytes` against the pace; how long (ms) to hold them. */
  #take(bytes: number): number {
    const now = performance.timeOrigin + performance.now();
    for (;;) {
      const before = Atomics.load(this.#due, 0);
      // Time not used is not saved up beyond the slack: a pause does not earn a burst.
      const due = Math.max(before === 0n ? Number.NEGATIVE_INFINITY : Number(before) / 1000, now - slackMs) + bytes * this.#msPerByte;
      if (Atomics.compareExchange(this.#due, 0, before, BigInt(Math.round(due * 1000))) === before) {
        return due - now - slackMs;
      }
    }
  }
}
