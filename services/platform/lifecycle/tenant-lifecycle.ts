import { Code, ConnectError } from "@connectrpc/connect";
import type { MikroORM } from "@mikro-orm/postgresql";
import type { Tier } from "../../../gen/tenantry/platform/v1/platform_service_pb.js";
import { checkTenantId, checkTextLine, type Logger } from "../../mesh/index.ts";
import { lockForTransaction, type AdvisoryLocks } from "../advisory-locks.ts";
import { platformActor, type AuditLog } from "../audit-log.ts";
import { refuseWhileRestoring, restoreLock, type TenantBackups } from "../backups/index.ts";
import type { ClusterRegistry } from "../cluster-registry.ts";
import { PeriodicSweep } from "../periodic-sweep.ts";
import { SingleFlight } from "../single-flight.ts";
import type { Tenant } from "../entities/tenant.ts";
import {
  auditOutcomes,
  changeStatus,
  changeTenant,
  deleteFailedTenant,
  findOffboardingTenants,
  refuseWhileMoving,
  forgetVersions,
  getTenant,
  startOffboarding,
  statusNames,
  tierName,
  type TenantChange,
} from "../stores/index.ts";
import { checkTier } from "../tenant-messages.ts";
import { offboardingStepTable, offboardingSteps, type OffboardingStep } from "./offboarding-steps.ts";

/** Options of {@link TenantLifecycle}. */
export interface TenantLifecycleOptions {
  orm: MikroORM;
  clusters: ClusterRegistry;
  locks: AdvisoryLocks;
  audit: AuditLog;
  /** Takes a tenant's final backup when it is offboarded. */
  backups: TenantBackups;
  /** How long after DeleteTenant the database and role are dropped; 0 drops them at once. */
  graceMs: number;
  /** How often tenants past their grace period are looked for. */
  checkIntervalMs: number;
  log: Logger;
  /** Called when an offboarding step's work is done, before it is recorded (for tests). */
  afterStep?: (tenantId: string, step: OffboardingStep) => void | Promise<void>;
}

/** The fields of a tenant UpdateTenant can change, as `update_mask` names them. */
export const changeableTenantFields = ["display_name", "tier"] as const;

/**
 * A tenant's life after provisioning: changing its name and tier,
 * suspending and resuming it, and offboarding it (final backup, revoke,
 * drop after a grace period) as resumable steps, like provisioning.
 */
export class TenantLifecycle {
  readonly #options: TenantLifecycleOptions;
  /** Offboardings under way in this process, by tenant (advisory locks are re-entrant within a session). */
  readonly #offboarding = new SingleFlight<Tenant>();
  readonly #sweeper: PeriodicSweep;

  constructor(options: TenantLifecycleOptions) {
    this.#options = options;
    this.#sweeper = new PeriodicSweep(() => this.#sweep(), {
      intervalMs: options.checkIntervalMs,
      onError: (error) => options.log.error({ err: error }, "offboarding sweep failed"),
    });
  }

  /** Changes the fields named by `paths` (checked against {@link changeableTenantFields} by the caller). */
  async update(tenantId: string, change: { displayName: string; tier: Tier; paths: (typeof changeableTenantFields)[number][] }): Promise<Tenant> {
    const em = this.#options.orm.em.fork();
    const tenant = await getTenant(em, tenantId);
    const changed: TenantChange = {};
    for (const field of change.paths) {
      switch (field) {
        case "display_name": {
          const name = checkTextLine(change.displayName, "display_name", 200);
          if (name === "") {
            throw new ConnectError("display_name must have 1 to 200 characters", Code.InvalidArgument);
          }
          changed.displayName = name;
          break;
        }
        case "tier":
          if (change.tier === 0) {
            throw new ConnectError("tier is required when update_mask names it", Code.InvalidArgument);
          }
          changed.tier = tierName(checkTier(change.tier));
          break;
      }
    }
    if (tenant.status === statusNames.deleted || tenant.status === statusNames.offboarding) {
      throw new ConnectError(`tenant "${tenant.id}" is ${tenant.status} and cannot be changed`, Code.FailedPrecondition);
    }
    await changeTenant(em, tenant, changed);
    return tenant;
  }

  /** Suspends an ACTIVE tenant (a suspended one stays as it is). */
  async suspend(tenantId: string, reason: string): Promise<Tenant> {
    const id = checkTenantId(tenantId);
    if ([...reason].length > 500) {
      throw new ConnectError("reason is longer than 500 characters", Code.InvalidArgument);
    }
    return this.#transition(id, [statusNames.active, statusNames.suspended], statusNames.suspended, { suspendedReason: reason.trim() === "" ? null : reason.trim() });
  }

  /** Serves a SUSPENDED tenant again (an active one stays as it is). */
  resume(tenantId: string): Promise<Tenant> {
    return this.#transition(checkTenantId(tenantId), [statusNames.suspended, statusNames.active], statusNames.active, { suspendedReason: null });
  }

  /**
   * Offboards a tenant: OFFBOARDING, final backup, login revoked, and — at once
   * when the grace period is 0, else later by the sweeper — database and
   * role dropped, DELETED. A FAILED tenant has nothing left and is DELETED.
   */
  async delete(tenantId: string): Promise<Tenant> {
    const em = this.#options.orm.em.fork();
    const tenant = await getTenant(em, tenantId);
    const id = tenant.id;
    if (tenant.status === statusNames.failed) {
      if (await deleteFailedTenant(em, id)) {
        return getTenant(em.fork(), id);
      }
    } else if (tenant.status === statusNames.active || tenant.status === statusNames.suspended) {
      // Not under a restore or a move: either would switch the tenant's database while offboarding backs it up and drops it.
      await em.transactional(async (tx) => {
        await lockForTransaction(tx, restoreLock(id));
        await refuseWhileRestoring(tx, id);
        await refuseWhileMoving(tx, id);
        await startOffboarding(tx, id, offboardingSteps[0], this.#options.graceMs);
      });
    } else if (tenant.status === statusNames.provisioning) {
      throw new ConnectError(`tenant "${id}" is being provisioned; delete it once it is ACTIVE or FAILED`, Code.FailedPrecondition);
    }
    return this.#offboard(id);
  }

  /** Resumes offboardings left half-done, and starts looking for tenants past their grace period. */
  start(): void {
    this.#sweeper.start();
  }

  /** Stops the sweeper and waits for a sweep under way. */
  stop(): Promise<void> {
    return this.#sweeper.stop();
  }

  async #sweep(): Promise<void> {
    const due = await findOffboardingTenants(this.#options.orm.em.fork());
    for (const tenant of due) {
      await this.#offboard(tenant.id).catch((error: unknown) =>
        this.#options.log.warn({ tenantId: tenant.id, reason: ConnectError.from(error).rawMessage }, "offboarding did not finish; will retry"),
      );
    }
  }

  /** Moves a tenant whose status is one of `from` to `to`; FAILED_PRECONDITION otherwise. */
  async #transition(id: string, from: string[], to: string, set: Partial<Pick<Tenant, "suspendedReason">>): Promise<Tenant> {
    const em = this.#options.orm.em.fork();
    const tenant = await getTenant(em, id);
    if (!from.includes(tenant.status)) {
      throw new ConnectError(`tenant "${id}" is ${tenant.status}; only a tenant that is ${from[0]} can become ${to}`, Code.FailedPrecondition);
    }
    if (tenant.status === to) {
      return tenant;
    }
    if (!(await changeStatus(em, id, tenant.status, to, set))) {
      // Changed meanwhile: judge again on what it is now.
      return this.#transition(id, from, to, set);
    }
    return getTenant(em.fork(), id);
  }

  /** Drives an OFFBOARDING tenant as far as its grace period allows, once at a time in this process. */
  #offboard(id: string): Promise<Tenant> {
    return this.#offboarding.run(id, () => this.#offboardOnce(id));
  }

  async #offboardOnce(id: string): Promise<Tenant> {
    const key = `tenant:${id}`;
    if (!(await this.#options.locks.tryLock(key))) {
      throw new ConnectError(`tenant "${id}" is being worked on by another Platform instance; retry shortly`, Code.Unavailable);
    }
    try {
      const { orm, clusters, backups, afterStep, log } = this.#options;
      const em = orm.em.fork();
      const tenant = await getTenant(em, id);
      if (tenant.status !== statusNames.offboarding) {
        return tenant;
      }
      const context = { em, tenant, clusters, backups };
      const done = offboardingSteps.indexOf((tenant.lifecycleStep ?? offboardingSteps[0]) as OffboardingStep);
      for (const step of offboardingSteps.slice(done + 1)) {
        const { perform, afterGrace } = offboardingStepTable[step];
        if (afterGrace && tenant.purgeAfter != null && tenant.purgeAfter.getTime() > Date.now()) {
          return tenant;
        }
        const change: TenantChange = { ...(await perform(context)), lifecycleStep: step };
        await afterStep?.(id, step);
        if (step === offboardingSteps.at(-1)) {
          // The last step: nothing is left of the tenant but its record.
          Object.assign(change, { status: statusNames.deleted, lifecycleStep: null, rolePassword: null, ownerPassword: null });
        }
        await changeTenant(em, tenant, change);
      }
      await forgetVersions(em, id);
      await this.#options.audit.record({ actor: platformActor, action: "PurgeTenant", tenantId: id, outcome: auditOutcomes.succeeded, detail: { finalBackupId: tenant.finalBackupId } });
      log.info({ tenantId: id, finalBackupId: tenant.finalBackupId }, "tenant offboarded");
      return tenant;
    } finally {
      await this.#options.locks.unlock(key).catch(() => undefined);
    }
  }
}
