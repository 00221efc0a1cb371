import { Worker } from "node:worker_threads";

/** What the user of a thread of {@link WarmThreads} hears from it: its messages, and its end (an error, or none when it exited). */
export interface ThreadListeners<M> {
  message: (message: M) => void;
  ended: (error?: Error) => void;
}

/**
 * Threads of one module kept started between uses: starting one (a Node.js
 * environment, then its modules) takes 150–300 ms of CPU, which every
 * backup and restore would otherwise pay again, at the priority of
 * Platform's own thread. A thread handed back in the state it started in
 * is kept, up to `keep`; one that failed, or beyond that, is ended.
 * Threads never keep Platform from exiting.
 */
export class WarmThreads {
  readonly #url: URL;
  readonly #keep: number;
  readonly #idle = new Set<Worker>();
  /** How to stop listening to each thread, for whoever listens now. */
  readonly #unlisten = new Map<Worker, () => void>();

  constructor(url: URL, keep: number) {
    this.#url = url;
    this.#keep = keep;
  }

  /** A thread kept started if there is one, else a new one, heard by `listeners` until it is given back. */
  take<M>(listeners: ThreadListeners<M>): Worker {
    let [worker] = this.#idle;
    if (worker === undefined) {
      worker = new Worker(this.#url);
      worker.unref();
    } else {
      this.#idle.delete(worker);
    }
    this.#listen(worker, listeners);
    return worker;
  }

  /** Takes a thread back, in the state it started in, to be used again. */
  give(worker: Worker): void {
    if (this.#idle.size >= this.#keep) {
      this.#unlisten.get(worker)?.();
      this.#unlisten.delete(worker);
      void worker.terminate();
      return;
    }
    this.#idle.add(worker);
    this.#listen(worker, {
      message: () => {},
      ended: () => {
        this.#idle.delete(worker);
        this.#unlisten.get(worker)?.();
        this.#unlisten.delete(worker);
      },
    });
  }

  #listen<M>(worker: Worker, listeners: ThreadListeners<M>): void {
    this.#unlisten.get(worker)?.();
    const exited = () => listeners.ended();
    const message = (data: unknown) => listeners.message(data as M);
    worker.on("message", message);
    worker.on("error", listeners.ended);
    worker.on("exit", exited);
    this.#unlisten.set(worker, () => {
      worker.off("message", message);
      worker.off("error", listeners.ended);
      worker.off("exit", exited);
    });
  }
}
