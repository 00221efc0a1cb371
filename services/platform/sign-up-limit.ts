import { Code, ConnectError } from "@connectrpc/connect";
import { LRUCache } from "lru-cache";

/**
 * How many sign-ups one source address may attempt per window (per Platform
 * process): beyond it, RESOURCE_EXHAUSTED until the window ends.
 */
export class SignUpLimit {
  readonly #perWindow: number;
  readonly #windowMs: number;
  readonly #attempts: LRUCache<string, { count: number; windowEnds: number }>;

  constructor(options: { perWindow: number; windowMs: number }) {
    this.#perWindow = options.perWindow;
    this.#windowMs = options.windowMs;
    this.#attempts = new LRUCache({ max: 100_000, ttl: options.windowMs });
  }

  /** Counts an attempt from `source`; throws once it is over the limit. */
  take(source: string): void {
    const now = Date.now();
    let entry = this.#attempts.get(source);
    if (entry === undefined || entry.windowEnds <= now) {
      entry = { count: 0, windowEnds: now + this.#windowMs };
    }
    entry.count++;
    this.#attempts.set(source, entry);
    if (entry.count > this.#perWindow) {
      throw new ConnectError(`too many sign-ups from this address; retry in ${Math.ceil((entry.windowEnds - now) / 60_000)} min`, Code.ResourceExhausted);
    }
  }
}
