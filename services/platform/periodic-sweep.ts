/**
 * Work Platform does on its own every so often (offboarding tenants past
 * their grace period, going on with restores left under way): once at
 * start, then every `intervalMs`, never two runs at once. A failed run is
 * reported to `onError`; the next goes on.
 */
export class PeriodicSweep {
  readonly #work: () => Promise<void>;
  readonly #intervalMs: number;
  readonly #onError: (error: unknown) => void;
  #timer: NodeJS.Timeout | undefined;
  #sweeping: Promise<void> | undefined;

  constructor(work: () => Promise<void>, options: { intervalMs: number; onError: (error: unknown) => void }) {
    this.#work = work;
    this.#intervalMs = options.intervalMs;
    this.#onError = options.onError;
  }

  /** Runs the work now (unless a run is under way), and every interval from now on. */
  start(): void {
    this.#sweep();
    this.#timer = setInterval(() => this.#sweep(), this.#intervalMs);
    this.#timer.unref();
  }

  /** Stops the timer and waits for a run under way. */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    await this.#sweeping;
  }

  #sweep(): void {
    this.#sweeping ??= this.#work()
      .catch(this.#onError)
      .finally(() => (this.#sweeping = undefined));
  }
}
