import { Code, ConnectError } from "@connectrpc/connect";
import type { MikroORM } from "@mikro-orm/postgresql";
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { checkTenantId, checkUuid, type Logger, type WriteFreezeNotice } from "../../mesh/index.ts";
import {
  deleteWriteFreeze,
  findWriteFreeze,
  forgetFeedWatchers,
  getTenant,
  insertWriteFreeze,
  listWriteFreezes,
  markWriteFreezeAcknowledged,
  recordWriteFreezeAcknowledgement,
  renewWriteFreeze,
  servedStatuses,
  touchFeedWatchers,
  unacknowledgedWatchers,
  writeFreezeLeases,
  type WriteFreezeRecord,
} from "../stores/index.ts";
import { announceWriteFreeze } from "../tenant-change-feed.ts";

/** The longest a freeze may last. */
export const maxFreezeTtlMs = 3_600_000;

/** A service instance watching the change feed is waited for while it was seen this recently: it may only be reconnecting. */
const watcherLiveMs = 3000;
/** How often this Platform records that the instances watching through it are still there. */
const watcherHeartbeatMs = 1000;
/** Watchers not seen for this long are forgotten. */
const forgetWatchersMs = 3_600_000;
/** How often a new freeze's acknowledgements are looked for. */
const acknowledgementPollMs = 20;

/** Options of {@link TenantWriteFreezes}. */
export interface TenantWriteFreezesOptions {
  orm: MikroORM;
  /**
   * How long a freeze's lease lasts: this Platform renews it every third of
   * that while the freeze lasts; services end a freeze whose lease ran out.
   */
  leaseMs: number;
  /** How long `freeze` waits for every service instance to acknowledge before it gives up and thaws. */
  acknowledgeTimeoutMs: number;
  log: Logger;
}

/** A freeze this Platform made and keeps renewing until it ends. */
interface HeldFreeze {
  tenantId: string;
  renewal: NodeJS.Timeout;
  expiry: NodeJS.Timeout;
}

/**
 * Freezes of tenants' writes: recorded in the platform database, announced
 * on the change feed, acknowledged by every service instance watching it,
 * and held as a lease that the Platform instance which made a freeze
 * renews until the freeze is thawed or its time to live has passed. Should
 * that instance stop, the lease runs out and every service ends the freeze
 * by itself. Later steps (a move's cutover, an in-place restore) freeze a
 * tenant through this, as the operator's FreezeTenantWrites does.
 */
export class TenantWriteFreezes {
  readonly #options: TenantWriteFreezesOptions;
  readonly #held = new Map<string, HeldFreeze>();
  /** The instances watching the change feed through this Platform, with how many streams each has open. */
  readonly #watchers = new Map<string, { service: string; streams: number }>();
  #heartbeat: NodeJS.Timeout | undefined;

  constructor(options: TenantWriteFreezesOptions) {
    this.#options = options;
  }

  /**
   * Freezes a tenant's writes for at most `ttlMs`, and resolves once every
   * service instance watching the change feed has acknowledged: each holds
   * the tenant's new writes and has none under way. INVALID_ARGUMENT for a
   * ttl out of range, NOT_FOUND for an unknown tenant, FAILED_PRECONDITION
   * for a tenant that is neither ACTIVE nor SUSPENDED or already frozen,
   * UNAVAILABLE when an instance did not acknowledge in time (the freeze
   * is then lifted).
   */
  async freeze(tenantId: string, options: { ttlMs: number; actor: string }): Promise<WriteFreezeRecord> {
    if (!(options.ttlMs > 0 && options.ttlMs <= maxFreezeTtlMs)) {
      throw new ConnectError(`a freeze lasts more than 0 ms and at most an hour, not ${options.ttlMs} ms`, Code.InvalidArgument);
    }
    const em = this.#options.orm.em.fork();
    const tenant = await getTenant(em, tenantId);
    if (!servedStatuses.includes(tenant.status)) {
      throw new ConnectError(`tenant "${tenant.id}" is ${tenant.status}: only an active or suspended tenant's writes can be frozen`, Code.FailedPrecondition);
    }
    const freezeId = randomUUID();
    const leaseMs = Math.min(this.#options.leaseMs, options.ttlMs);
    const made = await em.transactional(async (tx) => {
      const record = await insertWriteFreeze(tx, { tenantId: tenant.id, freezeId, actor: options.actor, ttlMs: options.ttlMs, leaseMs });
      if (record === null) {
        const current = await findWriteFreeze(tx, tenant.id);
        throw new ConnectError(
          `tenant "${tenant.id}"'s writes are frozen already` +
            (current === null ? "" : ` (freeze ${current.freezeId}, by ${current.actor}, until ${current.expiresAt.toISOString()})`) +
            ": thaw them first",
          Code.FailedPrecondition,
        );
      }
      await announceWriteFreeze(tx, { tenantId: tenant.id, freezeId, leaseMs });
      return record;
    });
    this.#hold(made);
    try {
      await this.#acknowledged(made);
    } catch (error) {
      await this.thaw(tenant.id, freezeId).catch((thawError: unknown) => this.#options.log.error({ err: thawError, tenantId: tenant.id, freezeId }, "could not lift a write freeze that failed"));
      throw error;
    }
    this.#options.log.info({ tenantId: tenant.id, freezeId, actor: options.actor }, "tenant's writes frozen");
    return (await findWriteFreeze(this.#options.orm.em.fork(), tenant.id)) ?? made;
  }

  /**
   * Ends a tenant's freeze (only `freezeId`, when given); returns the freeze
   * that ended, or null when none was in force. NOT_FOUND for an unknown
   * tenant; FAILED_PRECONDITION when another freeze than `freezeId` holds it.
   */
  async thaw(tenantId: string, freezeId?: string): Promise<WriteFreezeRecord | null> {
    const em = this.#options.orm.em.fork();
    const tenant = await getTenant(em, tenantId);
    const wanted = freezeId === undefined || freezeId === "" ? undefined : checkUuid(freezeId, "freeze_id");
    const ended = await em.transactional(async (tx) => {
      const removed = await deleteWriteFreeze(tx, tenant.id, wanted);
      if (removed === null) {
        const current = wanted === undefined ? null : await findWriteFreeze(tx, tenant.id);
        if (current !== null) {
          throw new ConnectError(`tenant "${tenant.id}" is held by freeze ${current.freezeId}, not ${wanted}`, Code.FailedPrecondition);
        }
        return null;
      }
      await announceWriteFreeze(tx, { tenantId: tenant.id, freezeId: removed.freezeId, leaseMs: 0 });
      return removed;
    });
    if (ended !== null) {
      this.#release(ended.freezeId);
      this.#options.log.info({ tenantId: tenant.id, freezeId: ended.freezeId }, "tenant's writes thawed");
    }
    return ended && ended.leaseUntil > new Date() ? ended : null;
  }

  /** The freezes in force, ordered by tenant id. */
  list(): Promise<WriteFreezeRecord[]> {
    return listWriteFreezes(this.#options.orm.em.fork());
  }

  /** Records a service instance's acknowledgement of a freeze; NOT_FOUND when the freeze is not in force. */
  async acknowledge(ack: { tenantId: string; freezeId: string; instanceId: string; service: string }): Promise<void> {
    const tenantId = checkTenantId(ack.tenantId, "tenant_id");
    const freezeId = checkUuid(ack.freezeId, "freeze_id");
    const instanceId = checkUuid(ack.instanceId, "instance_id");
    if (!(await recordWriteFreezeAcknowledgement(this.#options.orm.em.fork(), { tenantId, freezeId, instanceId, service: ack.service }))) {
      throw new ConnectError(`no write freeze ${freezeId} of tenant "${tenantId}" is in force`, Code.NotFound);
    }
  }

  /**
   * A service instance watches the change feed through this Platform, from
   * now until `stop`, and a few seconds after (it may be reconnecting):
   * freezes wait for it meanwhile. `inForce` records it as watching in the
   * platform database and lists the freezes in force, for the feed's first
   * message: called once the feed listens, the database is there to take
   * both (a restart of it costs the feed no more than the restart).
   */
  watching(instanceId: string, service: string): { inForce: () => Promise<WriteFreezeNotice[]>; stop: () => void } {
    const id = checkUuid(instanceId, "instance_id");
    const watcher = this.#watchers.get(id) ?? { service, streams: 0 };
    watcher.streams++;
    this.#watchers.set(id, watcher);
    this.#heartbeat ??= setInterval(() => void this.#beat(), watcherHeartbeatMs).unref();
    let stopped = false;
    return {
      inForce: async () => {
        const em = this.#options.orm.em.fork();
        await touchFeedWatchers(em, [{ instanceId: id, service }]);
        return writeFreezeLeases(em);
      },
      stop: () => {
        if (stopped) {
          return;
        }
        stopped = true;
        if (--watcher.streams === 0 && this.#watchers.get(id) === watcher) {
          this.#watchers.delete(id);
          // Seen until now: freezes wait for it a moment longer, in case it reconnects.
          void touchFeedWatchers(this.#options.orm.em.fork(), [{ instanceId: id, service }]).catch(() => undefined);
        }
      },
    };
  }

  /** Stops renewing: the freezes this Platform holds are thawed, and its watchers are no longer seen. */
  async close(): Promise<void> {
    clearInterval(this.#heartbeat);
    this.#heartbeat = undefined;
    for (const [freezeId, held] of [...this.#held]) {
      await this.thaw(held.tenantId, freezeId).catch((error: unknown) => this.#options.log.warn({ err: error, tenantId: held.tenantId, freezeId }, "could not thaw a write freeze on shutdown; its lease will run out"));
      this.#release(freezeId);
    }
  }

  /** Keeps renewing a freeze's lease until it ends, and ends it at its time to live. */
  #hold(freeze: WriteFreezeRecord): void {
    const { tenantId, freezeId } = freeze;
    let renewing = false;
    const renewal = setInterval(async () => {
      if (renewing) {
        return;
      }
      renewing = true;
      try {
        const em = this.#options.orm.em.fork();
        const renewed = await em.transactional(async (tx) => {
          const lease = await renewWriteFreeze(tx, freezeId, this.#options.leaseMs);
          if (lease !== null) {
            await announceWriteFreeze(tx, { tenantId, freezeId, leaseMs: lease.leaseMs });
          }
          return lease;
        });
        if (renewed === null) {
          // Thawed by another Platform instance, or past its end.
          this.#release(freezeId);
        }
      } catch (error) {
        this.#options.log.warn({ err: error, tenantId, freezeId }, "could not renew a write freeze's lease; services end it when it runs out");
      } finally {
        renewing = false;
      }
    }, Math.max(1, Math.floor(this.#options.leaseMs / 3)));
    renewal.unref();
    const expiry = setTimeout(() => {
      void this.thaw(tenantId, freezeId).catch((error: unknown) => this.#options.log.warn({ err: error, tenantId, freezeId }, "could not end a write freeze at its time to live; its lease will run out"));
    }, Math.max(0, freeze.expiresAt.getTime() - Date.now()));
    expiry.unref();
    this.#held.set(freezeId, { tenantId, renewal, expiry });
  }

  #release(freezeId: string): void {
    const held = this.#held.get(freezeId);
    if (held !== undefined) {
      clearInterval(held.renewal);
      clearTimeout(held.expiry);
      this.#held.delete(freezeId);
    }
  }

  /** Resolves once every service instance watching has acknowledged the freeze; UNAVAILABLE after the timeout, naming those that did not. */
  async #acknowledged(freeze: WriteFreezeRecord): Promise<void> {
    const deadline = Date.now() + this.#options.acknowledgeTimeoutMs;
    for (;;) {
      const em = this.#options.orm.em.fork();
      const missing = await unacknowledgedWatchers(em, freeze.freezeId, watcherLiveMs);
      if (missing.length === 0) {
        await markWriteFreezeAcknowledged(em, freeze.freezeId);
        return;
      }
      if (!this.#held.has(freeze.freezeId)) {
        throw new ConnectError(`the write freeze of tenant "${freeze.tenantId}" was thawed before every service acknowledged it`, Code.Aborted);
      }
      if (Date.now() >= deadline) {
        const names = missing.map((w) => `${w.service} instance ${w.instanceId}`).join(", ");
        throw new ConnectError(
          `the write freeze of tenant "${freeze.tenantId}" was not acknowledged within ${this.#options.acknowledgeTimeoutMs} ms by ${names} ` +
            "(a write of the tenant still under way there, or the instance cut off from Platform's change feed); the freeze is lifted: retry",
          Code.Unavailable,
        );
      }
      await sleep(acknowledgementPollMs);
    }
  }

  async #beat(): Promise<void> {
    try {
      const em = this.#options.orm.em.fork();
      await touchFeedWatchers(em, [...this.#watchers].map(([instanceId, w]) => ({ instanceId, service: w.service })));
      await forgetFeedWatchers(em, forgetWatchersMs);
    } catch (error) {
      this.#options.log.warn({ err: error }, "could not record the service instances watching the change feed");
    }
  }
}
