import { Code, ConnectError } from "@connectrpc/connect";
import { UniqueConstraintViolationException, type EntityManager, type MikroORM } from "@mikro-orm/postgresql";
import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { Placement } from "../../../gen/tenantry/platform/v1/platform_service_pb.js";
import { checkTenantId, tenantDatabaseName } from "../../mesh/index.ts";
import { lockForTransaction, type AdvisoryLocks } from "../advisory-locks.ts";
import type { Tenant } from "../entities/tenant.ts";
import { SingleFlight } from "../single-flight.ts";
import {
  changeTenant,
  findProvisioningTenants,
  findTenant,
  forgetVersions,
  getTenant,
  insertTenant,
  listClusters,
  ownerPasswordContext,
  placementNames,
  pooledSchemaPrefix,
  recordStepDone,
  restartProvisioning,
  restoringStep,
  rolePasswordContext,
  statusNames,
  tierName,
} from "../stores/index.ts";
import { checkNewTenant, type NewTenant } from "./new-tenant.ts";
import { chooseCluster } from "./placement.ts";
import type { PlacementName } from "../config.ts";
import {
  choosePoolDatabaseIn,
  provisioningPlanOf,
  provisioningSteps,
  rollbackStepTable,
  rollingBack,
  type ProvisioningStep,
  type RollbackStep,
  type StepContext,
  type StepServices,
} from "./provisioning-steps.ts";

/** Options of a {@link TenantProvisioner}: what its steps work with, and its own. */
export interface TenantProvisionerOptions extends StepServices {
  orm: MikroORM;
  locks: AdvisoryLocks;
  /**
   * Called when a step's work is done, before it is recorded (`register`
   * is recorded with its work). Lets a test stop the process at any step.
   */
  afterStep?: (tenantId: string, step: ProvisioningStep | RollbackStep) => void | Promise<void>;
  /** Each tier's placement (by tier name) for tenants created without one; dedicated when unset. */
  tierPlacements?: ReadonlyMap<string, PlacementName>;
}

const firstStep = provisioningSteps[0];

/**
 * Provisions tenants as a resumable state machine over the steps of
 * {@link provisioningStepTable}: the tenant is recorded with its cluster and
 * sealed role password, then its login role, its database (one of the
 * cluster's stock of ready databases, else a copy of the cluster's
 * template, else empty), the database locked to that role, every
 * service's schema at its newest version with the versions in the ledger,
 * and only then ACTIVE. A failure undoes what was made (database, role) and
 * leaves the tenant FAILED with the reason.
 */
export class TenantProvisioner {
  readonly #options: TenantProvisionerOptions;
  readonly #running = new SingleFlight<Tenant>();

  constructor(options: TenantProvisionerOptions) {
    this.#options = options;
  }

  /**
   * Provisions a new tenant. The same request for an existing tenant returns
   * it (resuming or retrying it if needed); a different one is ALREADY_EXISTS.
   */
  async create(request: NewTenant): Promise<Tenant> {
    const started = performance.now();
    const wanted = checkNewTenant(request);
    const { tenantId } = wanted;
    const em = this.#options.orm.em.fork();
    const existing = await findTenant(em, tenantId);
    if (existing !== null) {
      return this.#again(existing, wanted);
    }
    try {
      await this.#record(em, wanted, firstStep, undefined, { choosePool: true });
    } catch (error) {
      if (error instanceof UniqueConstraintViolationException) {
        return this.#again(await getTenant(this.#options.orm.em.fork(), tenantId), wanted);
      }
      throw error;
    }
    this.#options.log.debug({ tenantId, step: firstStep, ms: round(performance.now() - started), recordMs: 0 }, "provisioning step done");
    await this.#options.afterStep?.(tenantId, firstStep);
    return this.#run(tenantId);
  }

  /**
   * Records a tenant that a restore makes (a clone), placed and with its
   * role's password sealed as a new tenant's, PROVISIONING at
   * {@link restoringStep}: the restore drives it from there with the steps
   * of provisioning it needs, and records itself with `alongside`, in the
   * same transaction. ALREADY_EXISTS when the id is taken.
   */
  async recordClone(request: Pick<NewTenant, "tenantId" | "displayName" | "tier" | "placement">, alongside: (em: EntityManager, tenant: Tenant) => Promise<void>): Promise<Tenant> {
    // The placement asked for, else its tier's: a backup restores into either.
    const wanted = checkNewTenant({ ...request, cluster: "", region: "", ownerEmail: "", ownerPassword: "" });
    const em = this.#options.orm.em.fork();
    const taken = () => new ConnectError(`tenant "${wanted.tenantId}" already exists; choose another id for the clone`, Code.AlreadyExists);
    if ((await findTenant(em, wanted.tenantId)) !== null) {
      throw taken();
    }
    try {
      return await this.#record(em, wanted, restoringStep, alongside);
    } catch (error) {
      throw error instanceof UniqueConstraintViolationException ? taken() : error;
    }
  }

  /**
   * Records a new tenant on the cluster placement chooses, at `step`, and
   * whatever goes `alongside` it; with `choosePool`, a pooled tenant's pool
   * database too (as the choose-pool step would, in the same transaction:
   * one registry write fewer; that step then finds it chosen).
   */
  async #record(
    em: EntityManager,
    wanted: NewTenant,
    step: string,
    alongside?: (em: EntityManager, tenant: Tenant) => Promise<void>,
    { choosePool = false }: { choosePool?: boolean } = {},
  ): Promise<Tenant> {
    const { tenantId } = wanted;
    const { clusters, box, poolMaxTenants, poolNamePrefix } = this.#options;
    return em.transactional(async (tx) => {
      // One placement at a time, so that two tenants never take a cluster's last place.
      await lockForTransaction(tx, "placement");
      const pooled = this.#placementOf(wanted) === placementNames.pooled;
      const cluster = chooseCluster(await listClusters(tx), { ...wanted, pooled });
      // Else a pooled tenant's is chosen by the choose-pool step (a restore's clone, by the restore). Taken after
      // "placement" (never before it), the cluster's pool lock is held to the commit; a new pool database is made under both.
      const pool = pooled && choosePool ? await choosePoolDatabaseIn(tx, clusters, box, cluster, { poolMaxTenants, poolNamePrefix }) : "";
      const tenant = await insertTenant(tx, {
        id: tenantId,
        displayName: wanted.displayName,
        tier: tierName(wanted.tier),
        database: pooled ? pool : tenantDatabaseName(tenantId),
        cluster,
        role: tenantDatabaseName(tenantId),
        // A pooled tenant's role does not log in: its route carries its pool database's login.
        rolePassword: pooled ? null : this.#options.box.seal(randomBytes(24).toString("base64url"), rolePasswordContext(tenantId)),
        placement: pooled ? placementNames.pooled : placementNames.dedicated,
        schemaPrefix: pooled ? pooledSchemaPrefix(tenantId) : "",
        lifecycleStep: step,
        ownerEmail: wanted.ownerEmail === "" ? null : wanted.ownerEmail,
        ownerPassword: wanted.ownerEmail === "" ? null : this.#options.box.seal(wanted.ownerPassword, ownerPasswordContext(tenantId)),
      });
      await alongside?.(tx, tenant);
      return tenant;
    });
  }

  /** The placement a new tenant asks for, else its tier's. */
  #placementOf(wanted: NewTenant): PlacementName {
    if (wanted.placement === Placement.POOLED) {
      return placementNames.pooled;
    }
    if (wanted.placement === Placement.DEDICATED) {
      return placementNames.dedicated;
    }
    return this.#options.tierPlacements?.get(tierName(wanted.tier)) ?? placementNames.dedicated;
  }

  /** Provisions a FAILED tenant again from the start; FAILED_PRECONDITION for any other status. */
  async retry(tenantId: string): Promise<Tenant> {
    const id = checkTenantId(tenantId);
    const em = this.#options.orm.em.fork();
    if (!(await restartProvisioning(em, id, firstStep))) {
      const tenant = await getTenant(em, id);
      if (tenant.status !== statusNames.provisioning) {
        throw new ConnectError(`tenant "${id}" is ${tenant.status}, not failed: only a FAILED tenant can be retried`, Code.FailedPrecondition);
      }
    }
    return this.#run(id);
  }

  /**
   * Resumes every tenant left PROVISIONING by a Platform that stopped
   * half-way (and not being worked on by another instance). Failures are
   * logged; the tenants end ACTIVE or FAILED.
   */
  async resumeUnfinished(): Promise<void> {
    const unfinished = await findProvisioningTenants(this.#options.orm.em.fork());
    for (const tenant of unfinished) {
      this.#options.log.info({ tenantId: tenant.id, step: tenant.lifecycleStep }, "resuming provisioning");
      await this.#run(tenant.id).catch((error: unknown) =>
        this.#options.log.warn({ tenantId: tenant.id, reason: ConnectError.from(error).rawMessage }, "resumed provisioning did not succeed"),
      );
    }
  }

  /** The same request again: answer with the tenant, or refuse a different one. */
  async #again(existing: Tenant, wanted: NewTenant): Promise<Tenant> {
    if (existing.lifecycleStep === restoringStep) {
      throw new ConnectError(`tenant "${existing.id}" already exists: it is being restored from a backup; choose another id`, Code.AlreadyExists);
    }
    const same =
      existing.displayName === wanted.displayName &&
      existing.tier === tierName(wanted.tier) &&
      (wanted.placement === undefined || wanted.placement === Placement.UNSPECIFIED || existing.placement === this.#placementOf(wanted)) &&
      (existing.ownerEmail ?? "") === wanted.ownerEmail &&
      (wanted.cluster === "" || wanted.cluster === existing.cluster) &&
      (wanted.region === "" || (existing.cluster != null && (await this.#options.clusters.access(existing.cluster)).region === wanted.region));
    if (!same || existing.status === statusNames.deleted || existing.status === statusNames.offboarding) {
      throw new ConnectError(`tenant "${existing.id}" already exists (status ${existing.status}); choose another id`, Code.AlreadyExists);
    }
    if (existing.status === statusNames.failed) {
      return this.retry(existing.id);
    }
    if (existing.status === statusNames.provisioning) {
      return this.#run(existing.id);
    }
    return existing;
  }

  /** Drives a tenant to its end, once per process, and once across Platform instances. */
  #run(tenantId: string): Promise<Tenant> {
    return this.#running.run(tenantId, async () => {
      const key = `tenant:${tenantId}`;
      if (!(await this.#options.locks.tryLock(key))) {
        return this.#awaitOther(tenantId);
      }
      try {
        const advance = () => this.#advance(tenantId);
        const { stock, pooledStock } = this.#options;
        const withStock = () => stock?.whileProvisioning(advance) ?? advance();
        return await (pooledStock?.whileProvisioning(withStock) ?? withStock());
      } finally {
        await this.#options.locks.unlock(key).catch(() => undefined);
      }
    });
  }

  /** Another Platform instance holds the tenant: wait for it to finish. */
  async #awaitOther(tenantId: string): Promise<Tenant> {
    const deadline = Date.now() + 120_000;
    for (;;) {
      const tenant = await getTenant(this.#options.orm.em.fork(), tenantId);
      if (provisioningEnded(tenant)) {
        return tenant;
      }
      if (Date.now() > deadline) {
        throw new ConnectError(`tenant "${tenantId}" is still being provisioned by another Platform instance; retry later`, Code.Unavailable);
      }
      await sleep(250);
    }
  }

  /** Performs the steps after the last one recorded, each recorded once done; on a failure, rolls back. */
  async #advance(tenantId: string): Promise<Tenant> {
    const em = this.#options.orm.em.fork();
    const tenant = await getTenant(em, tenantId);
    if (provisioningEnded(tenant)) {
      return tenant;
    }
    if (tenant.lifecycleStep === restoringStep) {
      throw new ConnectError(`tenant "${tenantId}" is being restored from a backup, not provisioned`, Code.FailedPrecondition);
    }
    const context = this.#context(em, tenant);
    if (tenant.lifecycleStep === rollingBack) {
      await this.#rollback(context, tenant.error ?? "provisioning was interrupted");
      throw failure(tenant, Code.Internal);
    }
    const plan = provisioningPlanOf(tenant.placement);
    const done = plan.steps.indexOf((tenant.lifecycleStep ?? firstStep) as ProvisioningStep);
    for (const step of plan.steps.slice(done + 1)) {
      const started = performance.now();
      // activate is recorded with its work (the tenant ACTIVE, its step cleared).
      const recording: StepContext["recording"] = step === "activate" ? undefined : { step, recorded: false };
      try {
        await plan.table[step]!.perform({ ...context, ...(recording === undefined ? {} : { recording }) });
      } catch (error) {
        const cause = error instanceof ConnectError ? error : undefined;
        this.#options.log.error({ err: error, tenantId, step }, "provisioning failed");
        await this.#rollback(context, cause?.rawMessage ?? describe(error));
        throw failure(tenant, failureCode(cause));
      }
      const performed = performance.now();
      await this.#options.afterStep?.(tenantId, step);
      if (recording !== undefined && !recording.recorded && recording.deferred !== true && plan.table[step]!.redoneOnResume !== true) {
        await recordStepDone(em, tenant, step);
      }
      // What each step costs, its work and its record apart (bench:pooled with BENCH_PHASES=1 reads them).
      this.#options.log.debug({ tenantId, step, ms: round(performed - started), recordMs: round(performance.now() - performed) }, "provisioning step done");
    }
    this.#options.log.info({ tenantId, cluster: tenant.cluster, database: tenant.database }, "tenant provisioned");
    return tenant;
  }

  /** Undoes a provisioning: the rollback steps (database, role), then the ledger; leaves the tenant FAILED. */
  async #rollback(context: StepContext, reason: string): Promise<void> {
    const { em, tenant } = context;
    await changeTenant(em, tenant, { lifecycleStep: rollingBack, error: reason });
    if (tenant.cluster != null) {
      for (const step of provisioningPlanOf(tenant.placement).rollback) {
        await rollbackStepTable[step](context);
        await this.#options.afterStep?.(tenant.id, step);
      }
    }
    await forgetVersions(em, tenant.id);
    // A pooled tenant holds no place in its pool database any more: a retry chooses one again.
    const pooled = tenant.placement === placementNames.pooled;
    await changeTenant(em, tenant, { status: statusNames.failed, lifecycleStep: null, ...(pooled ? { database: "" } : {}) });
  }

  #context(em: EntityManager, tenant: Tenant): StepContext {
    const { clusters, schemas, templates, stock, pooledStock, box, migrateTimeoutMs, poolMaxTenants, poolNamePrefix, log } = this.#options;
    return {
      em,
      tenant,
      clusters,
      schemas,
      templates,
      stock,
      pooledStock,
      box,
      migrateTimeoutMs,
      ...(poolMaxTenants === undefined ? {} : { poolMaxTenants }),
      ...(poolNamePrefix === undefined ? {} : { poolNamePrefix }),
      log,
      run: {},
    };
  }
}

/** Whether a tenant's provisioning is over (it is ACTIVE or later); FAILED_PRECONDITION when it failed. */
function provisioningEnded(tenant: Tenant): boolean {
  if (tenant.status === statusNames.failed) {
    throw failure(tenant, Code.FailedPrecondition);
  }
  return tenant.status !== statusNames.provisioning;
}

/** The code a failed provisioning is answered with: the cause's, but INTERNAL for what is not the caller's to fix, and UNAVAILABLE for a service that timed out. */
function failureCode(cause: ConnectError | undefined): Code {
  if (cause === undefined || cause.code === Code.Unknown || cause.code === Code.Internal) {
    return Code.Internal;
  }
  return cause.code === Code.DeadlineExceeded ? Code.Unavailable : cause.code;
}

function failure(tenant: Tenant, code: Code): ConnectError {
  return new ConnectError(`provisioning tenant "${tenant.id}" failed and it is left FAILED: ${tenant.error ?? "unknown reason"}; fix the cause and call RetryProvisioning`, code);
}

/** Milliseconds to a tenth. */
function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}

function describe(error: unknown): string {
  const code = (error as { code?: unknown }).code;
  if (code === "42P04") {
    return "a database with the tenant's name already exists on the server";
  }
  return "an internal error; the Platform log has the detail";
}
