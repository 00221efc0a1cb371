import { Code, ConnectError } from "@connectrpc/connect";
import { LRUCache } from "lru-cache";

/** Options of {@link RateLimit}. */
export interface RateLimitOptions {
  /** Attempts allowed per key and window. */
  perWindow: number;
  windowMs: number;
  /** What a refusal says before when to retry, such as "too many sign-ups from this address". */
  refusal: string;
}

/**
 * How many attempts one key (a source address, a tenant) may make per
 * window, in this Platform process: beyond it, RESOURCE_EXHAUSTED until
 * the window ends. A window starts with the first attempt of a key. The
 * refusal says when to retry, and its `retry-after` metadata in how many
 * seconds.
 */
export class RateLimit {
  readonly #options: RateLimitOptions;
  readonly #attempts: LRUCache<string, { count: number; windowEnds: number }>;

  constructor(options: RateLimitOptions) {
    this.#options = options;
    this.#attempts = new LRUCache({ max: 100_000, ttl: options.windowMs });
  }

  /** Counts an attempt of `key`; throws once it is over the limit. */
  take(key: string): void {
    const now = Date.now();
    let entry = this.#attempts.get(key);
    if (entry === undefined || entry.windowEnds <= now) {
      entry = { count: 0, windowEnds: now + this.#options.windowMs };
    }
    entry.count++;
    this.#attempts.set(key, entry);
    if (entry.count > this.#options.perWindow) {
      const seconds = Math.ceil((entry.windowEnds - now) / 1000);
      const wait = seconds < 120 ? `${seconds} s` : `${Math.ceil(seconds / 60)} min`;
      throw new ConnectError(`${this.#options.refusal}; retry in ${wait}`, Code.ResourceExhausted, { "retry-after": String(seconds) });
    }
  }
}
