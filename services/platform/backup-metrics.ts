import type { BatchObservableResult, Counter, Histogram, Meter } from "@opentelemetry/api";
import type { MikroORM } from "@mikro-orm/postgresql";
import { Tier } from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import type { Logger } from "../mesh/index.ts";
import type { BackupEvents, CountedRestoreKind } from "./backups/index.ts";
import { backupAgesByTier, countStoredBackups, tierName } from "./stores/index.ts";

/**
 * The bounds (seconds) of the tenants-by-backup-age gauge: an hour, six
 * hours, a day, two days, a week. A daily schedule keeps every tenant
 * within a day; the ones past two days missed a run.
 */
export const backupAgeBounds = [3_600, 21_600, 86_400, 172_800, 604_800];

/** Buckets of a backup's duration, in seconds: from a small tenant's tenth of a second to hours. */
const durationBuckets = [0.1, 0.5, 1, 5, 15, 60, 300, 900, 3_600, 14_400];

/** Buckets of a backup's stored size, in bytes: 10 kB to 100 GB. */
const sizeBuckets = [1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11];

/** Every tier, so that a tier without tenants reads 0 rather than disappearing. */
const tiers = Object.values(Tier).filter((t): t is Tier => typeof t === "number" && t !== Tier.UNSPECIFIED).map(tierName);

/** Options of {@link BackupMetrics}. */
export interface BackupMetricsOptions {
  /** Platform's database, read at each collection for the ages and stored backups. */
  orm: MikroORM;
  log: Logger;
}

/**
 * Backups and restores as metrics, with no series per tenant: tenants are
 * counted per tier and by how old their newest backup is (read from the
 * registry at each collection), backups and restores as they end in this
 * process by tier, kind and result. Every label takes a few known values.
 * Call `stop` to stop reading the registry.
 */
export class BackupMetrics implements BackupEvents {
  readonly #duration: Histogram;
  readonly #size: Histogram;
  readonly #failures: Counter;
  readonly #restores: Counter;
  readonly #verifications: Counter;
  readonly #stop: () => void;

  constructor(meter: Meter, options: BackupMetricsOptions) {
    this.#duration = meter.createHistogram("tenantry.backup.duration", {
      description: "Backups taken (SUCCEEDED), by how long they took and their tenant's tier; the count is the backups taken.",
      unit: "s",
      advice: { explicitBucketBoundaries: durationBuckets },
    });
    this.#size = meter.createHistogram("tenantry.backup.size", {
      description: "Backups taken, by the bytes they store (compressed and encrypted) and their tenant's tier.",
      unit: "By",
      advice: { explicitBucketBoundaries: sizeBuckets },
    });
    this.#failures = meter.createCounter("tenantry.backup.failures", {
      description: "Backups that ended FAILED (including those a stopped Platform left unfinished), by their tenant's tier.",
    });
    this.#restores = meter.createCounter("tenantry.restores", {
      description: "Restores that ran to their end, by kind (in_place, clone, undo) and result (succeeded, failed: rolled back).",
    });
    this.#verifications = meter.createCounter("tenantry.backup.verifications", {
      description: "Verification drills of backups, by result (passed, failed).",
    });
    const ageTenants = meter.createObservableGauge("tenantry.backup.age.tenants", {
      description:
        "Active and suspended tenants whose newest SUCCEEDED backup finished at most `le` seconds ago (a tenant never backed up counts from its creation), by tier; le=\"+Inf\" counts them all.",
    });
    const oldest = meter.createObservableGauge("tenantry.backup.age.max.seconds", {
      description: "The largest of those ages among a tier's active and suspended tenants, in seconds (0 when the tier has none).",
    });
    const stored = meter.createObservableGauge("tenantry.backups.stored", {
      description: "Backups stored (SUCCEEDED), by tenant tier and last verification (passed, failed, never).",
    });
    const storedBytes = meter.createObservableGauge("tenantry.backups.stored.bytes", {
      description: "Bytes of the backups stored, by tenant tier.",
    });
    const observables = [ageTenants, oldest, stored, storedBytes];
    const callback = async (result: BatchObservableResult) => {
      const em = options.orm.em.fork();
      try {
        const ages = await backupAgesByTier(em, backupAgeBounds);
        for (const tier of tiers) {
          const tierAges = ages.get(tier);
          backupAgeBounds.forEach((bound, index) => result.observe(ageTenants, tierAges?.within[index] ?? 0, { tier, le: String(bound) }));
          result.observe(ageTenants, tierAges?.tenants ?? 0, { tier, le: "+Inf" });
          result.observe(oldest, tierAges?.oldest ?? 0, { tier });
        }
        const counts = await countStoredBackups(em);
        for (const tier of tiers) {
          const ofTier = counts.filter((c) => c.tier === tier);
          for (const verify of ["passed", "failed", "never"]) {
            result.observe(stored, ofTier.find((c) => c.verify === verify)?.backups ?? 0, { tier, verify });
          }
          result.observe(storedBytes, ofTier.reduce((sum, c) => sum + c.bytes, 0), { tier });
        }
      } catch (error) {
        // A scrape while the database is away reports what it can; the next one tries again.
        options.log.warn({ err: error }, "backup metrics could not be read");
      }
    };
    meter.addBatchObservableCallback(callback, observables);
    this.#stop = () => meter.removeBatchObservableCallback(callback, observables);
  }

  backupTaken(event: { tier: string; seconds: number; sizeBytes: number }): void {
    this.#duration.record(event.seconds, { tier: event.tier });
    this.#size.record(event.sizeBytes, { tier: event.tier });
  }

  backupFailed(event: { tier: string }): void {
    this.#failures.add(1, { tier: event.tier });
  }

  restoreEnded(event: { kind: CountedRestoreKind; succeeded: boolean }): void {
    this.#restores.add(1, { kind: event.kind, result: event.succeeded ? "succeeded" : "failed" });
  }

  verified(event: { passed: boolean }): void {
    this.#verifications.add(1, { result: event.passed ? "passed" : "failed" });
  }

  /** Stops reading the registry at collections. */
  stop(): void {
    this.#stop();
  }
}
