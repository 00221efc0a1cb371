import type { Interceptor } from "@connectrpc/connect";
import { guardStream } from "../wire/stream-response.ts";

/**
 * Counts the calls a server is running, a streaming call until its stream
 * ends, so that a graceful shutdown knows when the last one has finished.
 */
export class InFlightCalls {
  #running = 0;
  #idle: (() => void) | undefined;

  /** Calls running now. */
  get count(): number {
    return this.#running;
  }

  /** The interceptor that counts the calls. */
  readonly interceptor: Interceptor = (next) => async (req) => {
    this.#running++;
    let res;
    try {
      res = await next(req);
    } catch (error) {
      this.#ended();
      throw error;
    }
    if (!res.stream) {
      this.#ended();
      return res;
    }
    return guardStream(res, { finally: () => this.#ended() });
  };

  /** Resolves once no call is running. */
  settled(): Promise<void> {
    return this.#running === 0 ? Promise.resolve() : new Promise<void>((resolve) => (this.#idle = resolve));
  }

  #ended(): void {
    this.#running--;
    if (this.#running === 0) {
      this.#idle?.();
    }
  }
}
