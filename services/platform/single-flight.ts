/**
 * At most one run per key at a time in this process: a call for a key that
 * is running joins that run (gets its promise) instead of starting another.
 */
export class SingleFlight<T> {
  readonly #running = new Map<string, Promise<T>>();

  /** Runs `work` for `key`, or joins the run of `key` under way. */
  run(key: string, work: () => Promise<T>): Promise<T> {
    let running = this.#running.get(key);
    if (running === undefined) {
      running = work().finally(() => this.#running.delete(key));
      this.#running.set(key, running);
    }
    return running;
  }
}
