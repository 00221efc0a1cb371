import { Code, ConnectError } from "@connectrpc/connect";
import type { EntityManager, MikroORM } from "@mikro-orm/postgresql";
import { randomBytes, randomUUID } from "node:crypto";
import { Placement, type Tier } from "../../../gen/tenantry/platform/v1/platform_service_pb.js";
import { checkTenantId, tenantDatabaseName } from "../../mesh/index.ts";
import { lockForTransaction, type AdvisoryLocks } from "../advisory-locks.ts";
import type { Backup } from "../entities/backup.ts";
import type { Restore } from "../entities/restore.ts";
import type { Tenant } from "../entities/tenant.ts";
import { freeGeneration, type TenantProvisioner } from "../provisioning/index.ts";
import { SingleFlight } from "../single-flight.ts";
import {
  changeRestore,
  deleteUnservedTenant,
  findExpiredKeeps,
  findLastInPlaceRestore,
  findRestore,
  refuseWhileMoving,
  findTenant,
  findTenantRestoreUnderWay,
  findUnfinishedRestores,
  forgetVersions,
  getBackup,
  getTenant,
  insertRestore,
  recordVerification,
  restoreKinds,
  restoreStates,
  restoreUnderWay,
  rolePasswordContext,
  backupStates,
  servedStatuses,
  tierOf,
  type RestoreKindName,
  placementNames,
  pooledSchemaPrefix,
} from "../stores/index.ts";
import {
  dropKept,
  pointOfNoReturn,
  requested,
  restoreStepTable,
  rollbacksOf,
  rollingBack,
  stepsOf,
  undoPointOfNoReturn,
  undoSteps,
  type RestoreContext,
  type RestoreServices,
  type RestoreStep,
} from "./restore-steps.ts";
import type { BackupEvents } from "./backup-events.ts";
import { answerOf, keyOf, reasonOf, type TenantBackups } from "./tenant-backups.ts";

/** Options of {@link TenantRestores}. */
export interface TenantRestoresOptions extends RestoreServices {
  orm: MikroORM;
  locks: AdvisoryLocks;
  backups: TenantBackups;
  provisioner: TenantProvisioner;
  /** Told as each restore, undo and verification drill ends. */
  events: BackupEvents;
  /** Called when a step's work is done, before it is recorded (for tests): the kind ("undo" for an undo), the restore, the step. */
  afterStep?: (kind: RestoreKindName | "undo", restoreId: string, step: RestoreStep) => void | Promise<void>;
}

/** What a restore asks for. */
export interface RestoreRequest {
  backupId: string;
  /** Empty or the backup's tenant: in place; another id: a clone of that id. */
  targetTenantId: string;
  /** A clone's tier; UNSPECIFIED for the source's. */
  tier: Tier;
  /** A clone's display name; empty for its id. */
  displayName: string;
  /**
   * A clone's placement; UNSPECIFIED (or absent) for the source's when the
   * clone keeps the source's tier, else the clone's tier's default.
   */
  placement?: Placement;
  /**
   * Called once the request is found good, just before the restore is
   * recorded: what it throws (a rate limit's refusal) refuses the restore,
   * and a request refused for what it asked is never counted.
   */
  admit?: () => void;
}

/**
 * Restores of backups as resumable step machines (see restore-steps.ts):
 * in place (with undo), as clones, and as verification drills. Each step's
 * completion is recorded; a Platform that stops anywhere goes on from the
 * last step recorded when it starts again, and a failure before the point
 * of no return drops what the restore made.
 */
export class TenantRestores {
  readonly #options: TenantRestoresOptions;
  readonly #running = new SingleFlight<Restore>();

  constructor(options: TenantRestoresOptions) {
    this.#options = options;
  }

  /** Restores a backup in place or as a clone; resolves once done with the restore and its tenant. */
  async restore(request: RestoreRequest): Promise<{ restore: Restore; tenant: Tenant }> {
    const { orm, backups, provisioner } = this.#options;
    const em = orm.em.fork();
    const backup = await getBackup(em, request.backupId);
    const target = request.targetTenantId === "" ? backup.tenantId : checkTenantId(request.targetTenantId, "target_tenant_id");
    // Refuses a backup that cannot be read before anything is made.
    await backups.open(backup);
    const id = randomUUID();
    const record = { id, backupId: backup.id, tenantId: target, sourceTenantId: backup.tenantId, step: requested };
    if (target === backup.tenantId) {
      await em.transactional(async (tx) => {
        await lockForTransaction(tx, restoreLock(target));
        const tenant = await getTenant(tx, target);
        if (!servedStatuses.includes(tenant.status) || tenant.cluster == null) {
          throw new ConnectError(`tenant "${target}" is ${tenant.status}: only an ACTIVE or SUSPENDED tenant can be restored in place`, Code.FailedPrecondition);
        }
        await refuseWhileRestoring(tx, target);
        // Moves take the same lock to check for restores.
        await refuseWhileMoving(tx, target);
        request.admit?.();
        if (tenant.placement === placementNames.pooled) {
          // A new generation of the tenant's schemas in its pool database, beside the one serving.
          const schemaPrefix = await freeGeneration(
            this.#options.clusters,
            { cluster: tenant.cluster, database: tenant.database, role: tenant.role!, base: pooledSchemaPrefix(tenant.id) },
            tenant.schemaPrefix,
          );
          await insertRestore(tx, {
            ...record,
            kind: restoreKinds.inPlace,
            placement: placementNames.pooled,
            cluster: tenant.cluster,
            database: tenant.database,
            previousDatabase: tenant.database,
            schemaPrefix,
            previousSchemaPrefix: tenant.schemaPrefix,
          });
          return;
        }
        const database = `${tenantDatabaseName(target)}_r${id.slice(0, 8)}`;
        // The restored database's schemas are named by service: the prefix the tenant has (if it came from a pool) is kept for an undo.
        await insertRestore(tx, { ...record, kind: restoreKinds.inPlace, cluster: tenant.cluster, database, previousDatabase: tenant.database, previousSchemaPrefix: tenant.schemaPrefix });
      });
    } else {
      const source = await findTenant(em, backup.tenantId);
      const tier = request.tier === 0 && source !== null ? tierOf(source.tier) : request.tier;
      const placement = request.placement ?? Placement.UNSPECIFIED;
      // Unspecified: the source's placement for a clone of the same tier; the tier's default for another.
      const keepsPlacement = placement === Placement.UNSPECIFIED && source !== null && tier === tierOf(source.tier);
      const wanted = keepsPlacement ? (source.placement === placementNames.pooled ? Placement.POOLED : Placement.DEDICATED) : placement;
      await provisioner.recordClone({ tenantId: target, displayName: request.displayName, tier, placement: wanted }, async (tx, tenant) => {
        request.admit?.();
        await insertRestore(tx, {
          ...record,
          kind: restoreKinds.clone,
          placement: tenant.placement,
          cluster: tenant.cluster!,
          // A pooled clone's pool database is chosen by its first step.
          database: tenant.database,
          schemaPrefix: tenant.schemaPrefix,
        });
      });
    }
    const restore = await this.#run(id);
    return { restore, tenant: await getTenant(orm.em.fork(), restore.tenantId) };
  }

  /**
   * Routes a tenant back to the database its last in-place restore
   * replaced and drops the restored one. NOT_FOUND when there is nothing to
   * undo; FAILED_PRECONDITION when the replaced database is gone. `admit`
   * is called as for a restore (see {@link RestoreRequest.admit}), unless
   * the undo is under way already.
   */
  async undo(tenantId: string, admit?: () => void): Promise<{ restore: Restore; tenant: Tenant }> {
    const { orm } = this.#options;
    // Under the lock restores take: an undo never starts while a restore of the tenant runs, nor a restore while an undo does.
    const restore = await orm.em.fork().transactional(async (tx) => {
      await lockForTransaction(tx, restoreLock(tenantId));
      const tenant = await getTenant(tx, tenantId);
      const last = await findLastInPlaceRestore(tx, tenant.id);
      if (last === null || last.state === restoreStates.undone) {
        throw new ConnectError(`tenant "${tenant.id}" has no in-place restore to undo`, Code.NotFound);
      }
      if (last.undoStep == null) {
        await refuseWhileRestoring(tx, tenant.id);
        if (last.previousDropped || (last.keepUntil != null && last.keepUntil.getTime() <= Date.now())) {
          throw new ConnectError(`the database restore "${last.id}" replaced was kept until ${last.keepUntil?.toISOString()} and is gone: the restore can no longer be undone`, Code.FailedPrecondition);
        }
        if (!servedStatuses.includes(tenant.status)) {
          throw new ConnectError(`tenant "${tenant.id}" is ${tenant.status}: only an ACTIVE or SUSPENDED tenant can be switched back`, Code.FailedPrecondition);
        }
        // A move away and back to the same cluster leaves the tenant in another database than the restore's.
        if (tenant.cluster !== last.cluster || tenant.placement !== last.placement || tenant.database !== last.database) {
          throw new ConnectError(
            `tenant "${tenant.id}" has moved (to cluster "${tenant.cluster}", ${tenant.placement}) since restore "${last.id}": the restore can no longer be undone`,
            Code.FailedPrecondition,
          );
        }
        await refuseWhileMoving(tx, tenant.id);
        admit?.();
        await changeRestore(tx, last, { undoStep: requested, previousStatus: null, error: null });
      }
      return last;
    });
    const undone = await this.#run(restore.id);
    return { restore: undone, tenant: await getTenant(orm.em.fork(), tenantId) };
  }

  /**
   * Restores a backup into a scratch database, compares every table with
   * the manifest, drops the scratch database and records the result on the
   * backup. A backup that does not restore is recorded (and answered) as
   * FAILED; only what may pass on a retry (UNAVAILABLE) is thrown.
   */
  async verify(backupId: string): Promise<Backup> {
    const { orm, backups, box } = this.#options;
    const em = orm.em.fork();
    const backup = await getBackup(em, backupId);
    if (backup.state !== backupStates.succeeded) {
      throw new ConnectError(`backup "${backup.id}" is ${backup.state}: only a SUCCEEDED backup can be verified`, Code.FailedPrecondition);
    }
    const busy = () => new ConnectError(`backup "${backup.id}" is being restored or verified; wait for it to end`, Code.FailedPrecondition);
    if (await restoreUnderWay(em, { backupId: backup.id })) {
      throw busy();
    }
    try {
      await backups.open(backup);
    } catch (error) {
      if (error instanceof ConnectError && error.code === Code.FailedPrecondition) {
        await recordVerification(em, backup.id, { passed: false, error: error.rawMessage });
        this.#options.events.verified({ passed: false });
        return getBackup(orm.em.fork(), backup.id);
      }
      throw error;
    }
    const id = randomUUID();
    const scratch = `tenantry_verify_${id.replaceAll("-", "").slice(0, 16)}`;
    // Checked again under a lock with the record: two requests at once run one drill.
    await em.transactional(async (tx) => {
      await lockForTransaction(tx, `verify:${backup.id}`);
      if (await restoreUnderWay(tx, { backupId: backup.id })) {
        throw busy();
      }
      await insertRestore(tx, {
        id,
        backupId: backup.id,
        kind: restoreKinds.verify,
        tenantId: backup.tenantId,
        sourceTenantId: backup.tenantId,
        cluster: backup.cluster,
        database: scratch,
        role: scratch,
        rolePassword: box.seal(randomBytes(24).toString("base64url"), rolePasswordContext(scratch)),
        step: requested,
      });
    });
    try {
      await this.#run(id);
    } catch (error) {
      if (ConnectError.from(error).code === Code.Unavailable) {
        throw error;
      }
    }
    return getBackup(orm.em.fork(), backup.id);
  }

  /** Goes on with the restores (and undos) a stopped Platform left under way, and drops kept databases past their time. */
  async sweep(): Promise<void> {
    const { orm, clusters, log } = this.#options;
    const em = orm.em.fork();
    for (const restore of await findUnfinishedRestores(em)) {
      await this.#run(restore.id).catch((error: unknown) =>
        log.warn({ restoreId: restore.id, tenantId: restore.tenantId, reason: ConnectError.from(error).rawMessage }, "resumed restore did not succeed"),
      );
    }
    for (const restore of await findExpiredKeeps(em, new Date())) {
      try {
        await dropKept(this.#context(em, restore));
        await changeRestore(em, restore, { previousDropped: true });
        log.info({ restoreId: restore.id, tenantId: restore.tenantId, database: restore.previousDatabase, schemaPrefix: restore.previousSchemaPrefix ?? undefined }, "database kept after a restore dropped");
      } catch (error) {
        log.warn({ err: error, restoreId: restore.id }, "could not drop the database a restore replaced; will retry");
      }
    }
  }

  /** What steps work with, for work on a restore that needs none of its backup (dropping what it kept). */
  #context(em: EntityManager, restore: Restore): RestoreContext {
    return { ...this.#options, em, restore, backup: { key: keyOf({ tenantId: restore.sourceTenantId, id: restore.backupId }), manifest: undefined!, dataKey: undefined! } };
  }

  /** Drives a restore to its end, once per process, and once across Platform instances. */
  #run(restoreId: string): Promise<Restore> {
    return this.#running.run(restoreId, async () => {
      const restore = await findRestore(this.#options.orm.em.fork(), restoreId);
      const key = restore!.kind === restoreKinds.verify ? `restore:${restoreId}` : `tenant:${restore!.tenantId}`;
      if (!(await this.#options.locks.tryLock(key))) {
        throw new ConnectError(`tenant "${restore!.tenantId}" is being worked on by another Platform instance; retry shortly`, Code.Unavailable);
      }
      try {
        // As a provisioning: the stock's refills wait for it to end, and one follows it (it may have taken a database).
        const stock = this.#options.stock;
        return await (stock === undefined ? this.#advance(restoreId) : stock.whileProvisioning(() => this.#advance(restoreId)));
      } finally {
        await this.#options.locks.unlock(key).catch(() => undefined);
      }
    });
  }

  /** Performs the steps after the last one recorded; on a failure before the point of no return, rolls back. */
  async #advance(restoreId: string): Promise<Restore> {
    const { orm, backups, afterStep, log } = this.#options;
    const em = orm.em.fork();
    const restore = (await findRestore(em, restoreId))!;
    const undoing = restore.undoStep != null;
    if (!undoing && restore.state !== restoreStates.running) {
      return restore;
    }
    const kind = restore.kind as RestoreKindName;
    const backup = await getBackup(em, restore.backupId).catch(() => undefined);
    const opened = backup === undefined || undoing ? undefined : await backups.open(backup).catch(() => undefined);
    const context: RestoreContext = {
      ...this.#options,
      em,
      restore,
      // An undo needs none of the backup; a restore whose backup is gone can only be rolled back.
      backup: { key: keyOf({ tenantId: restore.sourceTenantId, id: restore.backupId }), manifest: opened?.manifest!, dataKey: opened?.dataKey! },
    };
    const last = (undoing ? restore.undoStep : restore.step) ?? requested;
    if (last === rollingBack || (!undoing && opened === undefined)) {
      await this.#rollback(context, restore.error ?? `backup "${restore.backupId}" can no longer be read`);
      throw failure(restore, undoing);
    }
    const steps: readonly RestoreStep[] = undoing ? undoSteps : stepsOf(restore);
    const noReturn = undoing ? undoPointOfNoReturn : pointOfNoReturn[kind];
    const done = steps.indexOf(last as RestoreStep);
    for (const step of steps.slice(done + 1)) {
      const started = performance.now();
      try {
        await restoreStepTable[step](context);
      } catch (error) {
        log.warn({ err: error, restoreId, tenantId: restore.tenantId, step }, "restore step failed");
        const cause = answerOf(error);
        if (noReturn !== undefined && done >= steps.indexOf(noReturn)) {
          // The tenant is served from what the restore made: go forward, later if not now.
          throw new ConnectError(`restore "${restore.id}" is switched but not finished (${step}): ${cause.rawMessage}; Platform retries it`, Code.Unavailable);
        }
        await this.#rollback(context, reasonOf(error));
        throw new ConnectError(failure(restore, undoing).rawMessage, cause.code === Code.Unknown ? Code.Internal : cause.code);
      }
      log.debug({ restoreId, step, ms: Math.round(performance.now() - started) }, "restore step done");
      await afterStep?.(undoing ? "undo" : kind, restoreId, step);
      await changeRestore(em, restore, undoing ? { undoStep: step } : { step });
    }
    await this.#finish(context, undoing);
    log.info({ restoreId, tenantId: restore.tenantId, kind: undoing ? "undo" : kind }, "restore finished");
    return restore;
  }

  async #finish({ em, restore, keepMs }: RestoreContext, undoing: boolean): Promise<void> {
    const finishedAt = new Date();
    if (undoing) {
      // Nothing is kept: the restored database is gone, the replaced one serves again.
      await changeRestore(em, restore, { state: restoreStates.undone, undoStep: null, previousDropped: true, finishedAt });
      this.#ended(restore, true, true);
      return;
    }
    const keepUntil = restore.kind === restoreKinds.inPlace ? new Date(finishedAt.getTime() + keepMs) : null;
    await changeRestore(em, restore, { state: restoreStates.succeeded, keepUntil, finishedAt });
    if (restore.kind === restoreKinds.verify) {
      await recordVerification(em, restore.backupId, { passed: true, error: null });
    }
    this.#ended(restore, false, true);
  }

  /** Tells the events of a restore, undo or drill that has ended. */
  #ended(restore: Restore, undoing: boolean, succeeded: boolean): void {
    const { events } = this.#options;
    if (undoing) {
      events.restoreEnded({ kind: "undo", succeeded });
    } else if (restore.kind === restoreKinds.verify) {
      events.verified({ passed: succeeded });
    } else {
      events.restoreEnded({ kind: restore.kind === restoreKinds.clone ? "clone" : "in_place", succeeded });
    }
  }

  /** Undoes what a failed restore made, and leaves it FAILED (an undo: the restore as it was). */
  async #rollback(context: RestoreContext, reason: string): Promise<void> {
    const { em, restore } = context;
    const undoing = restore.undoStep != null;
    await changeRestore(em, restore, undoing ? { undoStep: rollingBack, error: reason } : { step: rollingBack, error: reason });
    for (const work of rollbacksOf(restore, undoing)) {
      await work(context);
    }
    if (undoing) {
      await changeRestore(em, restore, { undoStep: null });
      this.#ended(restore, true, false);
      return;
    }
    if (restore.kind === restoreKinds.clone) {
      await forgetVersions(em, restore.tenantId);
      await deleteUnservedTenant(em, restore.tenantId);
    }
    if (restore.kind === restoreKinds.verify) {
      await recordVerification(em, restore.backupId, { passed: false, error: reason });
    }
    await changeRestore(em, restore, { state: restoreStates.failed, finishedAt: new Date() });
    this.#ended(restore, false, false);
  }
}

/**
 * Refuses (FAILED_PRECONDITION) to start work that changes the tenant's
 * database or status (a restore or undo, offboarding) while a restore or
 * undo of it is under way. Call in a transaction holding {@link restoreLock}.
 */
export async function refuseWhileRestoring(em: EntityManager, tenantId: string): Promise<void> {
  const underWay = await findTenantRestoreUnderWay(em, tenantId);
  if (underWay !== null) {
    const what = underWay.state === restoreStates.running ? "a restore" : "the undo of a restore";
    throw new ConnectError(`${what} of tenant "${tenantId}" is under way (restore "${underWay.id}"); wait for it to end, then try again`, Code.FailedPrecondition);
  }
}

/** The transaction lock under which restores, undos and offboarding of the tenant start. */
export function restoreLock(tenantId: string): string {
  return `restore:${tenantId}`;
}

function failure(restore: Restore, undoing: boolean): ConnectError {
  const what = undoing ? `undoing restore "${restore.id}"` : `restore "${restore.id}" of backup "${restore.backupId}"`;
  return new ConnectError(`${what} failed and was rolled back: ${restore.error ?? "unknown reason"}`, Code.FailedPrecondition);
}
