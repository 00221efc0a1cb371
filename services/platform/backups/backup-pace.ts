import { Transform, type TransformCallback } from "node:stream";

/** How far ahead of its pace a stream may get before it is held: a burst, so that most chunks pass without a timer. */
const slackMs = 50;

/**
 * Holds the table streams of one backup to a rate, together: each stream
 * made by {@link through} lets a chunk pass once the bytes before it, in
 * every stream of the pace, are due at `bytesPerSecond`. A backup reads,
 * hashes, compresses and encrypts as fast as it is let through, so its
 * pace bounds the CPU (and the database server's reads) it takes from the
 * tenants served meanwhile.
 */
export class BackupPace {
  readonly #msPerByte: number;
  /** When the bytes let through so far are due (performance.now() ms). */
  #due = Number.NEGATIVE_INFINITY;

  /** `bytesPerSecond` 0 for no limit. */
  constructor(bytesPerSecond: number) {
    this.#msPerByte = bytesPerSecond > 0 ? 1000 / bytesPerSecond : 0;
  }

  /** A pass-through stream holding its chunks to the pace. */
  through(): Transform {
    return new Transform({
      transform: (chunk: Buffer, _encoding, done: TransformCallback) => {
        if (this.#msPerByte === 0) {
          return done(null, chunk);
        }
        const now = performance.now();
        // Time not used is not saved up beyond the slack: a pause does not earn a burst.
        this.#due = Math.max(this.#due, now - slackMs) + chunk.length * this.#msPerByte;
        const wait = this.#due - now - slackMs;
        if (wait <= 0) {
          return done(null, chunk);
        }
        setTimeout(() => done(null, chunk), wait);
      },
    });
  }
}
