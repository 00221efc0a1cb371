import { ConnectError } from "@connectrpc/connect";
import type { MikroORM } from "@mikro-orm/postgresql";
import { createHash } from "node:crypto";
import type { Logger } from "../../mesh/index.ts";
import type { AdvisoryLocks } from "../advisory-locks.ts";
import type { VerifySample } from "../config.ts";
import { findDueTenants, findExpiredBackups, findSlotBackups, verifyResults, type SlotBackup } from "../stores/index.ts";
import type { CronSchedule, ScheduleSlot } from "./cron-schedule.ts";
import type { TenantBackups } from "./tenant-backups.ts";
import type { TenantRestores } from "./tenant-restores.ts";

/** Options of {@link BackupSchedule}. */
export interface BackupScheduleOptions {
  orm: MikroORM;
  locks: AdvisoryLocks;
  backups: TenantBackups;
  restores: TenantRestores;
  /** Each tier's schedule, by the registry's spelling of the tier; null for none. */
  schedules: ReadonlyMap<string, CronSchedule | null>;
  /** How long after a slot begins its tenants' backups are spread over (see {@link spreadOffset}). */
  windowMs: number;
  /** Backups (and drills) at once on one cluster. */
  concurrencyPerCluster: number;
  /** How many of a slot's backups are verified. */
  verifySample: VerifySample;
  /** What retention keeps of each tenant's backups. */
  retention: { keepLast: number; keepDays: number };
  /** The time the schedule and retention go by. */
  now: () => Date;
  log: Logger;
}

/** What one run of the schedule did. */
export interface ScheduleRun {
  /** Whether this Platform ran it: false while another Platform held the schedule. */
  ran: boolean;
  /** Tenants backed up, by id. */
  backedUp: string[];
  /** Tenants whose backup failed, by id. */
  failed: string[];
  /** Backups verified by a drill (whatever the result), by id. */
  verified: string[];
  /** Backups retention deleted, by id. */
  deleted: string[];
}

/** The lock the Platform running the schedule holds while it runs it. */
const scheduleLock = "backup-schedule";

/** How many times a slot tries to back a tenant up. */
const attemptsPerSlot = 3;

/**
 * Scheduled backups, their verification drills and retention. Each tier
 * has a schedule (a cron pattern); each time it fires begins a slot, in
 * which each of the tier's ACTIVE and SUSPENDED tenants made before it is
 * backed up once, at a time of its own within the window (so that backups
 * spread out), at most `concurrencyPerCluster` at once per cluster; then a
 * sample of the slot's backups is verified, and backups retention no longer
 * keeps are deleted. What a slot has done is read from the registry (each
 * scheduled backup records its slot), so a Platform that restarts, or
 * another one, goes on where it stopped; one Platform at a time runs it
 * (an advisory lock).
 */
export class BackupSchedule {
  readonly #options: BackupScheduleOptions;
  /** Runs in this process, one after the other (the advisory lock is re-entrant within a session). */
  #last: Promise<unknown> = Promise.resolve();
  #stopped = false;

  constructor(options: BackupScheduleOptions) {
    this.#options = options;
  }

  /**
   * Does what is due now, by the `now` of the options: backs up the
   * tenants whose time in their slot has come, verifies the slots' sample,
   * applies retention. Resolves when done, with what it did; does nothing
   * while another Platform runs it.
   */
  runDue(): Promise<ScheduleRun> {
    const run = this.#last.then(() => this.#runOnce());
    this.#last = run.catch(() => undefined);
    return run;
  }

  /** Starts nothing more: a run under way ends with the backups and drills it has started; resolves when it has. */
  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#last;
  }

  async #runOnce(): Promise<ScheduleRun> {
    const { locks, log } = this.#options;
    const run: ScheduleRun = { ran: false, backedUp: [], failed: [], verified: [], deleted: [] };
    if (this.#stopped || !(await locks.tryLock(scheduleLock))) {
      return run;
    }
    try {
      run.ran = true;
      const now = this.#options.now();
      const slots = await this.#backUpDue(now, run);
      for (const slot of slots) {
        await this.#verifySample(slot, run);
      }
      await this.#applyRetention(now, run);
      if (run.backedUp.length + run.failed.length + run.verified.length + run.deleted.length > 0) {
        log.info({ backedUp: run.backedUp.length, failed: run.failed.length, verified: run.verified.length, deleted: run.deleted.length }, "backup schedule ran");
      }
      return run;
    } finally {
      await locks.unlock(scheduleLock).catch(() => undefined);
    }
  }

  /** Backs up the tenants due at `now`; returns the slots under way. */
  async #backUpDue(now: Date, run: ScheduleRun): Promise<ScheduleSlot[]> {
    const { orm, backups, schedules, windowMs, concurrencyPerCluster, log } = this.#options;
    const em = orm.em.fork();
    const slots = new Map<number, ScheduleSlot>();
    const due: { id: string; cluster: string; slot: ScheduleSlot }[] = [];
    for (const [tier, schedule] of schedules) {
      const slot = schedule?.slotAt(now);
      if (slot === undefined) {
        continue;
      }
      slots.set(slot.start.getTime(), slot);
      // A window longer than the slot would run into the next one.
      const window = Math.min(windowMs, slot.end.getTime() - slot.start.getTime());
      for (const tenant of await findDueTenants(em, { tier, start: slot.start, attempts: attemptsPerSlot })) {
        if (slot.start.getTime() + spreadOffset(tenant.id, window) <= now.getTime()) {
          due.push({ ...tenant, slot });
        }
      }
    }
    await this.#forEachPerCluster(due, concurrencyPerCluster, async ({ id, slot }) => {
      try {
        await backups.create(id, scheduledLabel(slot), { scheduledFor: slot.start });
        run.backedUp.push(id);
      } catch (error) {
        run.failed.push(id);
        log.warn({ tenantId: id, slot: slot.start, reason: ConnectError.from(error).rawMessage }, "scheduled backup failed");
      }
    });
    return [...slots.values()];
  }

  /** Verifies as many of the slot's backups as the sample asks, tenants verified longest ago (or never) first. */
  async #verifySample(slot: ScheduleSlot, run: ScheduleRun): Promise<void> {
    const { orm, restores, verifySample, concurrencyPerCluster, log } = this.#options;
    const taken = await findSlotBackups(orm.em.fork(), slot.start);
    const missing = sampleSize(verifySample, taken.length) - taken.filter((b) => b.verifiedAt !== null).length;
    const drills = taken
      .filter((b) => b.verifiedAt === null)
      .sort(verifiedLongestAgo)
      .slice(0, Math.max(0, missing));
    await this.#forEachPerCluster(drills, concurrencyPerCluster, async (backup) => {
      try {
        const verified = await restores.verify(backup.id);
        run.verified.push(backup.id);
        if (verified.verifyResult === verifyResults.failed) {
          log.error({ backupId: backup.id, tenantId: backup.tenantId, reason: verified.verifyError }, "scheduled verification drill failed: the backup does not restore");
        }
      } catch (error) {
        log.warn({ backupId: backup.id, tenantId: backup.tenantId, reason: ConnectError.from(error).rawMessage }, "scheduled verification drill could not run");
      }
    });
  }

  /** Deletes the backups retention no longer keeps, but those a restore or drill is using. */
  async #applyRetention(now: Date, run: ScheduleRun): Promise<void> {
    const { orm, backups, retention, log } = this.#options;
    const keepAfter = new Date(now.getTime() - retention.keepDays * 24 * 3600 * 1000);
    for (const backup of await findExpiredBackups(orm.em.fork(), { keepLast: retention.keepLast, keepAfter })) {
      if (this.#stopped) {
        return;
      }
      try {
        if (await backups.deleteUnused(backup)) {
          run.deleted.push(backup.id);
        }
      } catch (error) {
        log.warn({ err: error, backupId: backup.id, tenantId: backup.tenantId }, "could not delete a backup retention no longer keeps; will retry");
      }
    }
  }

  /** Runs `work` on every item, at most `concurrency` at once per cluster, clusters side by side, until stopped. */
  async #forEachPerCluster<T extends { cluster: string }>(items: T[], concurrency: number, work: (item: T) => Promise<void>): Promise<void> {
    const byCluster = Map.groupBy(items, (item) => item.cluster);
    await Promise.all(
      [...byCluster.values()].flatMap((queue) =>
        Array.from({ length: Math.min(concurrency, queue.length) }, async () => {
          for (let next = queue.shift(); next !== undefined && !this.#stopped; next = queue.shift()) {
            await work(next);
          }
        }),
      ),
    );
  }
}

/** The label of a backup a schedule takes. */
export function scheduledLabel(slot: ScheduleSlot): string {
  return `scheduled ${slot.start.toISOString()}`;
}

/**
 * When in its slot's window a tenant is backed up, as an offset from the
 * slot's start: the same for a tenant in every slot and on every Platform
 * (a hash of its id), spread evenly over `windowMs` across tenants.
 */
export function spreadOffset(tenantId: string, windowMs: number): number {
  const share = createHash("sha256").update(tenantId).digest().readUInt32BE(0) / 2 ** 32;
  return Math.floor(share * windowMs);
}

/** How many of `taken` backups a sample asks to verify: a count (at most all), or a share rounded up. */
export function sampleSize(sample: VerifySample, taken: number): number {
  return "count" in sample ? Math.min(sample.count, taken) : Math.min(taken, Math.ceil((taken * sample.percent) / 100));
}

/** Orders backups by when their tenant was last verified: never first, then longest ago; then by tenant. */
function verifiedLongestAgo(a: SlotBackup, b: SlotBackup): number {
  const at = (backup: SlotBackup) => backup.tenantVerifiedAt?.getTime() ?? -Infinity;
  return at(a) - at(b) || a.tenantId.localeCompare(b.tenantId);
}
