import { Code, ConnectError } from "@connectrpc/connect";
import { LRUCache } from "lru-cache";

interface Failures {
  count: number;
  lockedUntil: number;
}

/**
 * Slows down password guessing: after `freeAttempts` failures for one
 * tenant and email, each further attempt waits a lock that doubles with
 * every failure (up to `maxLockMs`); a success clears it. Per process.
 */
export class LoginThrottle {
  readonly #failures: LRUCache<string, Failures>;
  readonly #freeAttempts: number;
  readonly #baseLockMs: number;
  readonly #maxLockMs: number;

  constructor(options: { freeAttempts?: number; baseLockMs?: number; maxLockMs?: number } = {}) {
    this.#freeAttempts = options.freeAttempts ?? 5;
    this.#baseLockMs = options.baseLockMs ?? 1000;
    this.#maxLockMs = options.maxLockMs ?? 15 * 60_000;
    this.#failures = new LRUCache({ max: 100_000, ttl: this.#maxLockMs * 2 });
  }

  /** Throws RESOURCE_EXHAUSTED while the email is locked. */
  check(tenantId: string, email: string): void {
    const failures = this.#failures.get(key(tenantId, email));
    const wait = failures === undefined ? 0 : failures.lockedUntil - Date.now();
    if (wait > 0) {
      throw new ConnectError(`too many failed logins for this email; retry in ${Math.ceil(wait / 1000)} s`, Code.ResourceExhausted);
    }
  }

  failed(tenantId: string, email: string): void {
    const k = key(tenantId, email);
    const failures = this.#failures.get(k) ?? { count: 0, lockedUntil: 0 };
    failures.count++;
    if (failures.count >= this.#freeAttempts) {
      const lockMs = Math.min(this.#baseLockMs * 2 ** (failures.count - this.#freeAttempts), this.#maxLockMs);
      failures.lockedUntil = Date.now() + lockMs;
    }
    this.#failures.set(k, failures);
  }

  succeeded(tenantId: string, email: string): void {
    this.#failures.delete(key(tenantId, email));
  }
}

function key(tenantId: string, email: string): string {
  return `${tenantId}\0${email.toLowerCase()}`;
}
