import { AsyncLocalStorage } from "node:async_hooks";
import type { TenantEndpoint } from "./connection-budget.ts";

/**
 * The tenant whose database the current async scope may use. Every query of
 * a tenant call runs inside `run()`; the routing dialect reads `current()`
 * to pick the connection, and fails loudly outside a scope rather than
 * guessing a database.
 */
export class TenantScope {
  readonly #storage = new AsyncLocalStorage<TenantEndpoint>();

  /** Runs `fn` with `endpoint` as the current tenant. */
  run<T>(endpoint: TenantEndpoint, fn: () => T): T {
    return this.#storage.run(endpoint, fn);
  }

  /** The current tenant; throws outside a tenant scope. */
  current(): TenantEndpoint {
    const endpoint = this.#storage.getStore();
    if (endpoint === undefined) {
      throw new Error("database access outside a tenant scope: run it inside TenantScope.run() for the tenant it belongs to");
    }
    return endpoint;
  }

  /**
   * Wraps an async iterable so that each step runs in the tenant's scope. A
   * server-streaming handler's body runs when its response is iterated,
   * after the interceptor that opened the scope has returned.
   */
  wrap<T>(endpoint: TenantEndpoint, iterable: AsyncIterable<T>): AsyncIterable<T> {
    const storage = this.#storage;
    return {
      [Symbol.asyncIterator]() {
        const it = storage.run(endpoint, () => iterable[Symbol.asyncIterator]());
        return {
          next: (value?: unknown) => storage.run(endpoint, () => it.next(value)),
          return: (value?: unknown) =>
            storage.run(endpoint, () => (it.return ? it.return(value) : Promise.resolve({ done: true as const, value: value as T }))),
          throw: (error?: unknown) => storage.run(endpoint, () => (it.throw ? it.throw(error) : Promise.reject(error))),
        };
      },
    };
  }
}
