import { Code, ConnectError } from "@connectrpc/connect";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "../telemetry/logger.ts";

/** A write freeze of a tenant, as Platform's change feed announces it. */
export interface WriteFreezeNotice {
  /** The tenant whose writes are frozen. */
  tenantId: string;
  /** The freeze, as Platform names it. */
  freezeId: string;
  /** How long the freeze lasts from now unless renewed; 0 when it has ended. */
  leaseMs: number;
}

/** Options of {@link WriteFreezes}. */
export interface WriteFreezesOptions {
  /** How long a write call of a frozen tenant is held before it fails with UNAVAILABLE. */
  maxHoldMs: number;
  /**
   * Tells Platform that this process holds the tenant's writes under the
   * freeze and has none of them under way. Rejects with NOT_FOUND once the
   * freeze has ended.
   */
  acknowledge: (freeze: { tenantId: string; freezeId: string }) => Promise<void>;
  log: Logger;
}

interface Freeze {
  freezeId: string;
  /** Ends the freeze when its lease runs out without a renewal. */
  lease: NodeJS.Timeout;
  /** Resolves when the freeze ends, however it ends. */
  ended: Promise<void>;
  end: () => void;
  /** Called when the last write of the tenant under way ends. */
  drained?: () => void;
}

/** While Platform cannot be told, an acknowledgement is tried again this often at first, and at most this rarely. */
const retry = { initialMs: 50, maxMs: 1000 };

/**
 * The write freezes of tenants in this process, and the tenants' write
 * calls under way. While a tenant is frozen, its new write calls are held
 * (for up to `maxHoldMs`, then UNAVAILABLE) and its writes under way are
 * waited for; once none is left, the freeze is acknowledged to Platform. A
 * freeze ends when Platform says so, or by itself when its lease runs out
 * without a renewal, so that a Platform that disappears never leaves a
 * tenant frozen. A tenant that is not frozen pays two map updates per write.
 */
export class WriteFreezes {
  readonly #options: WriteFreezesOptions;
  readonly #frozen = new Map<string, Freeze>();
  /** Write calls under way, by tenant; a tenant with none has no entry. */
  readonly #writing = new Map<string, number>();
  /** Write calls held by a freeze, by tenant. */
  readonly #held = new Map<string, number>();
  #closed = false;

  constructor(options: WriteFreezesOptions) {
    this.#options = options;
  }

  /**
   * Lets a write call of a tenant begin: returns undefined when it may
   * begin at once, else a promise that resolves when the tenant's freeze
   * has ended and rejects with UNAVAILABLE after `maxHoldMs` (or with the
   * call's own error when `signal` aborts). Once it has begun, the call
   * counts as under way until `leave`.
   */
  enter(tenantId: string, signal: AbortSignal): Promise<void> | undefined {
    if (this.#frozen.size === 0 || !this.#frozen.has(tenantId)) {
      this.#writing.set(tenantId, (this.#writing.get(tenantId) ?? 0) + 1);
      return undefined;
    }
    return this.#hold(tenantId, signal);
  }

  /** A write call that `enter` let begin has ended. */
  leave(tenantId: string): void {
    const left = (this.#writing.get(tenantId) ?? 1) - 1;
    if (left > 0) {
      this.#writing.set(tenantId, left);
      return;
    }
    this.#writing.delete(tenantId);
    if (this.#frozen.size > 0) {
      this.#frozen.get(tenantId)?.drained?.();
    }
  }

  /** Runs one write of a tenant outside an RPC bound to it (a method naming the tenant in its request), held and counted as its write calls are. */
  async writing<T>(tenantId: string, signal: AbortSignal, write: () => Promise<T>): Promise<T> {
    const held = this.enter(tenantId, signal);
    if (held !== undefined) {
      await held;
    }
    try {
      return await write();
    } finally {
      this.leave(tenantId);
    }
  }

  /** Whether the tenant's writes are frozen here now. */
  isFrozen(tenantId: string): boolean {
    return this.#frozen.has(tenantId);
  }

  /**
   * Resolves once the tenant's writes are no longer frozen here, or after
   * `maxHoldMs` at most; rejects with the call's error when `signal` aborts.
   */
  async thawed(tenantId: string, signal: AbortSignal): Promise<void> {
    const deadline = Date.now() + this.#options.maxHoldMs;
    for (let freeze = this.#frozen.get(tenantId); freeze !== undefined && Date.now() < deadline; freeze = this.#frozen.get(tenantId)) {
      signal.throwIfAborted();
      const waiting = new AbortController();
      const aborted = () => waiting.abort();
      signal.addEventListener("abort", aborted, { once: true });
      try {
        await Promise.race([freeze.ended, sleep(deadline - Date.now(), undefined, { signal: waiting.signal }).catch(() => undefined)]);
      } finally {
        signal.removeEventListener("abort", aborted);
        waiting.abort();
      }
    }
    signal.throwIfAborted();
  }

  /** Write calls of the tenant under way now. */
  writesUnderWay(tenantId: string): number {
    return this.#writing.get(tenantId) ?? 0;
  }

  /** Write calls of the tenant held by its freeze now. */
  writesHeld(tenantId: string): number {
    return this.#held.get(tenantId) ?? 0;
  }

  /** Takes a freeze the change feed announced: a new one, a renewal, or its end (a lease of 0). */
  apply(notice: WriteFreezeNotice): void {
    if (this.#closed) {
      return;
    }
    const current = this.#frozen.get(notice.tenantId);
    if (notice.leaseMs <= 0) {
      if (current?.freezeId === notice.freezeId) {
        this.#end(notice.tenantId, current, "thawed");
      }
      return;
    }
    if (current?.freezeId === notice.freezeId) {
      clearTimeout(current.lease);
      current.lease = this.#leaseTimer(notice.tenantId, notice.freezeId, notice.leaseMs);
      return;
    }
    let end!: () => void;
    const ended = new Promise<void>((resolve) => (end = resolve));
    const freeze: Freeze = { freezeId: notice.freezeId, lease: this.#leaseTimer(notice.tenantId, notice.freezeId, notice.leaseMs), ended, end };
    this.#frozen.set(notice.tenantId, freeze);
    if (current !== undefined) {
      // Calls held by the freeze it replaces wake, find this one and wait on.
      clearTimeout(current.lease);
      current.end();
    }
    this.#options.log.info({ tenantId: notice.tenantId, freezeId: notice.freezeId, writesUnderWay: this.writesUnderWay(notice.tenantId) }, "tenant's writes frozen");
    void this.#acknowledgeWhenDrained(notice.tenantId, freeze);
  }

  /**
   * Takes the freezes in force as the change feed lists them on
   * (re)connecting: any other freeze has ended while the feed was away.
   */
  reset(notices: readonly WriteFreezeNotice[]): void {
    const listed = new Set(notices.map((n) => `${n.tenantId} ${n.freezeId}`));
    for (const [tenantId, freeze] of [...this.#frozen]) {
      if (!listed.has(`${tenantId} ${freeze.freezeId}`)) {
        this.#end(tenantId, freeze, "thawed");
      }
    }
    for (const notice of notices) {
      this.apply(notice);
    }
  }

  /** Ends every freeze and lets the calls held go on (the process is stopping). */
  close(): void {
    this.#closed = true;
    for (const [tenantId, freeze] of [...this.#frozen]) {
      this.#end(tenantId, freeze, "closed");
    }
  }

  async #hold(tenantId: string, signal: AbortSignal): Promise<void> {
    const deadline = Date.now() + this.#options.maxHoldMs;
    this.#held.set(tenantId, this.writesHeld(tenantId) + 1);
    try {
      for (let freeze = this.#frozen.get(tenantId); freeze !== undefined; freeze = this.#frozen.get(tenantId)) {
        if (signal.aborted) {
          throw ConnectError.from(signal.reason);
        }
        const left = deadline - Date.now();
        if (left <= 0) {
          throw new ConnectError(
            `tenant "${tenantId}" is moving: its writes are paused for a moment (this one was held ${this.#options.maxHoldMs} ms); retry shortly`,
            Code.Unavailable,
          );
        }
        const waiting = new AbortController();
        const aborted = () => waiting.abort();
        signal.addEventListener("abort", aborted, { once: true });
        try {
          await Promise.race([freeze.ended, sleep(left, undefined, { signal: waiting.signal }).catch(() => undefined)]);
        } finally {
          signal.removeEventListener("abort", aborted);
          waiting.abort();
        }
      }
    } finally {
      const held = this.writesHeld(tenantId) - 1;
      if (held > 0) {
        this.#held.set(tenantId, held);
      } else {
        this.#held.delete(tenantId);
      }
    }
    this.#writing.set(tenantId, this.writesUnderWay(tenantId) + 1);
  }

  #leaseTimer(tenantId: string, freezeId: string, leaseMs: number): NodeJS.Timeout {
    const timer = setTimeout(() => {
      const freeze = this.#frozen.get(tenantId);
      if (freeze?.freezeId === freezeId) {
        this.#end(tenantId, freeze, "lapsed");
      }
    }, leaseMs);
    timer.unref();
    return timer;
  }

  #end(tenantId: string, freeze: Freeze, how: "thawed" | "lapsed" | "closed"): void {
    clearTimeout(freeze.lease);
    this.#frozen.delete(tenantId);
    freeze.end();
    if (how === "lapsed") {
      this.#options.log.warn({ tenantId, freezeId: freeze.freezeId }, "tenant's write freeze lapsed: Platform did not renew it; its writes go on");
    } else if (how === "thawed") {
      this.#options.log.info({ tenantId, freezeId: freeze.freezeId }, "tenant's writes thawed");
    }
  }

  async #acknowledgeWhenDrained(tenantId: string, freeze: Freeze): Promise<void> {
    const current = () => !this.#closed && this.#frozen.get(tenantId) === freeze;
    if (this.writesUnderWay(tenantId) > 0) {
      await Promise.race([new Promise<void>((resolve) => (freeze.drained = resolve)), freeze.ended]);
      freeze.drained = undefined;
    }
    for (let wait = retry.initialMs; current(); wait = Math.min(wait * 2, retry.maxMs)) {
      try {
        await this.#options.acknowledge({ tenantId, freezeId: freeze.freezeId });
        return;
      } catch (error) {
        const cause = ConnectError.from(error);
        if (cause.code === Code.NotFound) {
          // Ended at Platform; the feed says so next.
          return;
        }
        this.#options.log.warn({ tenantId, freezeId: freeze.freezeId, code: Code[cause.code], reason: cause.rawMessage }, "could not acknowledge a write freeze; trying again");
      }
      await Promise.race([sleep(wait), freeze.ended]);
    }
  }
}
