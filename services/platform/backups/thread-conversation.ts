import type { MessagePort, TransferListItem, Worker } from "node:worker_threads";
import type { WarmThreads } from "./warm-threads.ts";

/** What every thread of a conversation may answer besides its own answers: a failure, with a database error's SQLSTATE or a zlib or zstd error's code. */
export interface ThreadFailure {
  type: "failed";
  message: string;
  code?: string;
}

/** How a conversation's user hears what is not the answer to a question: streamed answers, and failures. */
export interface ConversationListeners<A> {
  /** An answer that is not the one awaited (a chunk of data, a request for more); true when it was one. */
  streamed: (answer: A) => boolean;
  /** The thread failed or stopped: whatever the user streams ends with `error` (the question awaited is rejected with it anyway). */
  failed?: (error: Error) => void;
}

/**
 * A thread of {@link WarmThreads} asked one question at a time: each
 * question is answered once (or by a failure, thrown with the thread's
 * message and code), while other answers stream beside it. Closed, the
 * thread goes back to be used again; aborted, it is stopped, cutting what
 * it was doing (its connection included).
 */
export class ThreadConversation<Q extends { type: string }, A extends { type: string }> {
  readonly #threads: WarmThreads;
  readonly #worker: Worker;
  readonly #listeners: ConversationListeners<A>;
  #waiting: { resolve: (answer: A) => void; reject: (error: Error) => void } | undefined;
  #ended: Error | undefined;
  /** Handed back to be used again, once closed. */
  #released = false;

  /** `stopped`: what a thread that stopped by itself is said to have done. */
  constructor(threads: WarmThreads, stopped: string, listeners: ConversationListeners<A>) {
    this.#threads = threads;
    this.#listeners = listeners;
    this.#worker = threads.take({
      message: (answer: A | ThreadFailure) => this.#answer(answer),
      ended: (error?: Error) => {
        this.#ended ??= error ?? new Error(stopped);
        this.#fail(this.#ended);
      },
    });
  }

  /** Sends a message that expects no answer of its own. */
  tell(message: Q, transfer?: readonly TransferListItem[]): void {
    this.#worker.postMessage(message, transfer);
  }

  /** Asks `question`; resolves with its answer, rejects with the thread's failure. */
  ask(question: Q): Promise<A> {
    if (this.#ended !== undefined) {
      return Promise.reject(this.#ended);
    }
    return new Promise((resolve, reject) => {
      this.#waiting = { resolve, reject };
      this.#worker.postMessage(question);
    });
  }

  /** Asks `question` (the thread's close), then hands the thread back to be used again. */
  async close(question: Q): Promise<void> {
    await this.ask(question);
    this.#released = true;
    this.#threads.give(this.#worker);
  }

  /** Stops the thread, cutting what it was doing, with `why` for whatever awaited it (nothing once closed). */
  async abort(why: string): Promise<void> {
    if (this.#released) {
      return;
    }
    this.#ended ??= new Error(why);
    await this.#worker.terminate();
  }

  #answer(answer: A | ThreadFailure): void {
    if (answer.type === "failed") {
      const { message, code } = answer as ThreadFailure;
      this.#fail(Object.assign(new Error(message), code === undefined ? {} : { code }));
      return;
    }
    if (this.#listeners.streamed(answer as A)) {
      return;
    }
    const waiting = this.#waiting;
    this.#waiting = undefined;
    waiting?.resolve(answer as A);
  }

  #fail(error: Error): void {
    const waiting = this.#waiting;
    this.#waiting = undefined;
    this.#listeners.failed?.(error);
    waiting?.reject(error);
  }
}

/** The thread's side: answers each question `port` hears with what `handle` resolves to (nothing when undefined), or with its failure. */
export function answerEach<Q, A>(port: MessagePort, handle: (question: Q) => Promise<A | undefined>): void {
  port.on("message", (question: Q) => {
    handle(question).then(
      (answer) => answer !== undefined && port.postMessage(answer),
      (error: { message?: string; code?: unknown }) =>
        port.postMessage({ type: "failed", message: String(error.message ?? error), ...(typeof error.code === "string" ? { code: error.code } : {}) } satisfies ThreadFailure),
    );
  });
}

/** The memory of `chunk`, to hand over to another thread: its own buffer when it fills it, else a copy of its part. */
export function handedOver(chunk: Buffer): ArrayBuffer {
  return (chunk.byteOffset === 0 && chunk.byteLength === chunk.buffer.byteLength ? chunk.buffer : chunk.buffer.slice(chunk.byteOffset, chunk.byteOffset + chunk.byteLength)) as ArrayBuffer;
}
