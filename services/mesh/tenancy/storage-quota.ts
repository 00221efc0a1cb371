import { Code, ConnectError } from "@connectrpc/connect";
import { LRUCache } from "lru-cache";
import type { TenantRoute } from "./tenant-directory.ts";

/** Options of a {@link StorageQuota}. */
export interface StorageQuotaOptions {
  /** Measures a tenant's database in bytes. */
  measure: (route: TenantRoute) => Promise<number>;
  /** A measurement is trusted this long; then the next write measures again in the background. */
  intervalMs: number;
  /** How many tenants' measurements are kept. */
  maxEntries: number;
}

interface Measurement {
  bytes: number;
  measuredAt: number;
}

/**
 * Enforces each tenant's storage limit (from its tier, carried in its route)
 * on writes, measuring the database from PostgreSQL at most once per
 * interval per tenant: a stale measurement is used while a new one is taken,
 * so a write never waits for more than the first measurement.
 */
export class StorageQuota {
  readonly #options: StorageQuotaOptions;
  readonly #measured: LRUCache<string, Measurement>;
  readonly #measuring = new Map<string, Promise<Measurement>>();

  constructor(options: StorageQuotaOptions) {
    this.#options = options;
    this.#measured = new LRUCache({ max: options.maxEntries });
  }

  /** Throws RESOURCE_EXHAUSTED when the tenant's database is over its limit. Call it in the tenant's scope, before a write. */
  async checkWritable(route: TenantRoute): Promise<void> {
    const limit = Number(route.maxStorageBytes);
    if (limit <= 0) {
      return;
    }
    let measurement = this.#measured.get(route.tenantId);
    if (measurement === undefined) {
      measurement = await this.#measure(route);
    } else if (Date.now() - measurement.measuredAt > this.#options.intervalMs) {
      void this.#measure(route).catch(() => undefined);
    }
    if (measurement.bytes > limit) {
      throw new ConnectError(
        `tenant "${route.tenantId}" stores ${megabytes(measurement.bytes)} MB, over the ${megabytes(limit)} MB its tier allows: delete data or move to a larger tier`,
        Code.ResourceExhausted,
      );
    }
  }

  /** Forgets a tenant's measurement (after its limit changed, say). */
  forget(tenantId: string): void {
    this.#measured.delete(tenantId);
  }

  #measure(route: TenantRoute): Promise<Measurement> {
    let measuring = this.#measuring.get(route.tenantId);
    if (measuring === undefined) {
      measuring = this.#options
        .measure(route)
        .then((bytes) => {
          const measurement = { bytes, measuredAt: Date.now() };
          this.#measured.set(route.tenantId, measurement);
          return measurement;
        })
        .finally(() => this.#measuring.delete(route.tenantId));
      this.#measuring.set(route.tenantId, measuring);
    }
    return measuring;
  }
}

function megabytes(bytes: number): string {
  return (bytes / 1024 / 1024).toFixed(1);
}
