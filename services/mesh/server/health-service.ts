import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { Health, HealthCheckResponse_ServingStatus as ServingStatus } from "../../../gen/grpc/health/v1/health_pb.js";

export { Health, ServingStatus };

/**
 * The serving status of a process and of each service it serves, behind
 * `grpc.health.v1.Health`. The empty name stands for the whole process.
 */
export class HealthStatus {
  readonly #statuses = new Map<string, ServingStatus>();
  readonly #listeners = new Set<() => void>();

  constructor(services: string[]) {
    this.#statuses.set("", ServingStatus.SERVING);
    for (const service of services) {
      this.#statuses.set(service, ServingStatus.SERVING);
    }
  }

  /** Sets the status of every service at once, as on shutdown. */
  setAll(status: ServingStatus): void {
    for (const name of this.#statuses.keys()) {
      this.#statuses.set(name, status);
    }
    for (const listener of this.#listeners) {
      listener();
    }
  }

  /** The status of one service, or undefined for a name not served here. */
  get(service: string): ServingStatus | undefined {
    return this.#statuses.get(service);
  }

  /** Every service and its status. */
  entries(): [string, ServingStatus][] {
    return [...this.#statuses];
  }

  /** Calls `listener` on every change until the returned function is called. */
  subscribe(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
}

/** Implements `grpc.health.v1.Health` over a {@link HealthStatus}. */
export function healthService(health: HealthStatus): ServiceImpl<typeof Health> {
  return {
    check(req) {
      const status = health.get(req.service);
      if (status === undefined) {
        throw new ConnectError(`service "${req.service}" is not served here`, Code.NotFound);
      }
      return { status };
    },
    list() {
      return { statuses: Object.fromEntries(health.entries().map(([name, status]) => [name, { status }])) };
    },
    async *watch(req, ctx) {
      let changed = () => {};
      const unsubscribe = health.subscribe(() => changed());
      try {
        let last: ServingStatus | undefined;
        while (!ctx.signal.aborted) {
          const status = health.get(req.service) ?? ServingStatus.SERVICE_UNKNOWN;
          if (status !== last) {
            last = status;
            yield { status };
          }
          await new Promise<void>((resolve) => {
            changed = resolve;
            ctx.signal.addEventListener("abort", () => resolve(), { once: true });
          });
        }
      } finally {
        unsubscribe();
      }
    },
  };
}
