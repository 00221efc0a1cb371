import { Code, ConnectError } from "@connectrpc/connect";
import { UniqueConstraintViolationException, type EntityManager, type MikroORM } from "@mikro-orm/postgresql";
import pg from "pg";
import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { AuthService } from "../../gen/tenantry/auth/v1/auth_service_pb.js";
import type { Tier } from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import { checkEmail, checkPassword, checkTenantId, readAppliedMigrations, tenantDatabaseName, type Logger, type SecretBox } from "../mesh/index.ts";
import type { AdvisoryLocks } from "./advisory-locks.ts";
import type { ClusterRegistry } from "./cluster-registry.ts";
import type { Tenant } from "./entities/tenant.ts";
import { chooseCluster } from "./provisioning/placement.ts";
import type { SchemaServices } from "./schema-services.ts";
import { listClusters } from "./stores/cluster-store.ts";
import { forgetVersions, recordMigrated } from "./stores/schema-version-ledger.ts";
import {
  changeTenant,
  findProvisioningTenants,
  findTenant,
  getTenant,
  insertTenant,
  ownerPasswordContext,
  restartProvisioning,
  rolePasswordContext,
  statusNames,
  tierName,
} from "./stores/tenant-store.ts";
import type { TemplateDatabases } from "./template-databases.ts";
import { checkTier } from "./tenant-records.ts";

/**
 * The steps of provisioning a tenant, in order. Each is idempotent, and the
 * last one done is recorded on the tenant, so that a Platform that stops
 * anywhere resumes from there.
 */
export const provisioningSteps = ["register", "create-role", "create-database", "secure-database", "migrate-schemas", "bootstrap", "activate"] as const;

/** The steps of undoing a provisioning that failed. */
export const rollbackSteps = ["drop-database", "drop-role"] as const;

export type ProvisioningStep = (typeof provisioningSteps)[number];
export type RollbackStep = (typeof rollbackSteps)[number];

/** Options of a {@link TenantProvisioner}. */
export interface TenantProvisionerOptions {
  orm: MikroORM;
  clusters: ClusterRegistry;
  schemas: SchemaServices;
  /** The clusters' template databases; undefined to always migrate new databases directly. */
  templates: TemplateDatabases | undefined;
  locks: AdvisoryLocks;
  box: SecretBox;
  /** How long one service may take to migrate one tenant. */
  migrateTimeoutMs: number;
  log: Logger;
  /**
   * Called when a step's work is done, before it is recorded (`register`
   * is recorded with its work). Lets a test stop the process at any step.
   */
  afterStep?: (tenantId: string, step: ProvisioningStep | RollbackStep) => void | Promise<void>;
}

/** A request for a new tenant. */
export interface NewTenant {
  tenantId: string;
  displayName: string;
  tier: Tier;
  /** The cluster asked for; empty lets placement choose. */
  cluster: string;
  /** The region asked for when no cluster is; empty means any. */
  region: string;
  /** The owner Auth creates; empty for none. */
  ownerEmail: string;
  ownerPassword: string;
}

/**
 * Provisions tenants as a resumable state machine: the tenant is recorded
 * with its cluster and sealed role password, then its login role, its
 * database (a copy of the cluster's template, or empty), the database locked
 * to that role, every service's schema at its newest version with the
 * versions in the ledger, and only then ACTIVE. A failure undoes what was
 * made (database, role) and leaves the tenant FAILED with the reason.
 */
export class TenantProvisioner {
  readonly #options: TenantProvisionerOptions;
  readonly #running = new Map<string, Promise<Tenant>>();

  constructor(options: TenantProvisionerOptions) {
    this.#options = options;
  }

  /**
   * Provisions a new tenant. The same request for an existing tenant returns
   * it (resuming or retrying it if needed); a different one is ALREADY_EXISTS.
   */
  async create(request: NewTenant): Promise<Tenant> {
    const tenantId = checkTenantId(request.tenantId);
    const wanted = { ...request, tenantId, displayName: checkDisplayName(request.displayName, tenantId), tier: checkTier(request.tier), ...checkOwner(request) };
    const em = this.#options.orm.em.fork();
    const existing = await findTenant(em, tenantId);
    if (existing !== null) {
      return this.#again(existing, wanted);
    }
    try {
      await em.transactional(async (tx) => {
        // One placement at a time, so that two tenants never take a cluster's last place.
        await tx.execute("select pg_advisory_xact_lock(7351, hashtext('placement'))");
        const cluster = chooseCluster(await listClusters(tx), wanted);
        await insertTenant(tx, {
          id: tenantId,
          displayName: wanted.displayName,
          tier: tierName(wanted.tier),
          database: tenantDatabaseName(tenantId),
          cluster,
          role: tenantDatabaseName(tenantId),
          rolePassword: this.#options.box.seal(randomBytes(24).toString("base64url"), rolePasswordContext(tenantId)),
          lifecycleStep: "register",
          ownerEmail: wanted.ownerEmail === "" ? null : wanted.ownerEmail,
          ownerPassword: wanted.ownerEmail === "" ? null : this.#options.box.seal(wanted.ownerPassword, ownerPasswordContext(tenantId)),
        });
      });
    } catch (error) {
      if (error instanceof UniqueConstraintViolationException) {
        return this.#again(await getTenant(this.#options.orm.em.fork(), tenantId), wanted);
      }
      throw error;
    }
    await this.#options.afterStep?.(tenantId, "register");
    return this.#run(tenantId);
  }

  /** Provisions a FAILED tenant again from the start; FAILED_PRECONDITION for any other status. */
  async retry(tenantId: string): Promise<Tenant> {
    const id = checkTenantId(tenantId);
    const em = this.#options.orm.em.fork();
    if (!(await restartProvisioning(em, id, "register"))) {
      const tenant = await findTenant(em, id);
      if (tenant === null) {
        throw new ConnectError(`tenant "${id}" not found`, Code.NotFound);
      }
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
    const same =
      existing.displayName === wanted.displayName &&
      existing.tier === tierName(wanted.tier) &&
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
    let running = this.#running.get(tenantId);
    if (running === undefined) {
      running = (async () => {
        const key = `tenant:${tenantId}`;
        if (!(await this.#options.locks.tryLock(key))) {
          return this.#awaitOther(tenantId);
        }
        try {
          return await this.#advance(tenantId);
        } finally {
          await this.#options.locks.unlock(key).catch(() => undefined);
        }
      })().finally(() => this.#running.delete(tenantId));
      this.#running.set(tenantId, running);
    }
    return running;
  }

  /** Another Platform instance holds the tenant: wait for it to finish. */
  async #awaitOther(tenantId: string): Promise<Tenant> {
    const deadline = Date.now() + 120_000;
    for (;;) {
      const tenant = await getTenant(this.#options.orm.em.fork(), tenantId);
      if (tenant.status === statusNames.failed) {
        throw failure(tenant, Code.FailedPrecondition);
      }
      if (tenant.status !== statusNames.provisioning) {
        return tenant;
      }
      if (Date.now() > deadline) {
        throw new ConnectError(`tenant "${tenantId}" is still being provisioned by another Platform instance; retry later`, Code.Unavailable);
      }
      await sleep(250);
    }
  }

  async #advance(tenantId: string): Promise<Tenant> {
    const em = this.#options.orm.em.fork();
    const tenant = await getTenant(em, tenantId);
    if (tenant.status === statusNames.failed) {
      throw failure(tenant, Code.FailedPrecondition);
    }
    if (tenant.status !== statusNames.provisioning) {
      return tenant;
    }
    if (tenant.lifecycleStep === "rollback") {
      await this.#rollback(em, tenant, tenant.error ?? "provisioning was interrupted");
      throw failure(tenant, Code.Internal);
    }
    const run: RunState = {};
    const done = provisioningSteps.indexOf((tenant.lifecycleStep ?? "register") as ProvisioningStep);
    for (const step of provisioningSteps.slice(done + 1)) {
      try {
        await this.#perform(step, em, tenant, run);
      } catch (error) {
        const cause = error instanceof ConnectError ? error : undefined;
        const reason = cause?.rawMessage ?? describe(error);
        this.#options.log.error({ err: error, tenantId, step }, "provisioning failed");
        await this.#rollback(em, tenant, reason);
        const code =
          cause === undefined || cause.code === Code.Unknown || cause.code === Code.Internal
            ? Code.Internal
            : cause.code === Code.DeadlineExceeded
              ? Code.Unavailable
              : cause.code;
        throw failure(tenant, code);
      }
      await this.#options.afterStep?.(tenantId, step);
      if (step !== "activate") {
        await changeTenant(em, tenant, { lifecycleStep: step });
      }
    }
    this.#options.log.info({ tenantId, cluster: tenant.cluster, database: tenant.database }, "tenant provisioned");
    return tenant;
  }

  async #perform(step: ProvisioningStep, em: EntityManager, tenant: Tenant, run: RunState): Promise<void> {
    const { clusters, box, templates, schemas } = this.#options;
    const cluster = tenant.cluster!;
    const role = pg.escapeIdentifier(tenant.role!);
    const database = pg.escapeIdentifier(tenant.database);
    switch (step) {
      case "register":
        return;
      case "create-role": {
        const password = pg.escapeLiteral(box.open(tenant.rolePassword!, rolePasswordContext(tenant.id)));
        await clusters.admin(cluster, async (admin) => {
          const exists = await admin.query("select 1 from pg_roles where rolname = $1", [tenant.role]);
          await admin.query(`${exists.rowCount === 0 ? "create" : "alter"} role ${role} login password ${password}`);
        });
        return;
      }
      case "create-database": {
        const owner = await databaseOwner(clusters, cluster, tenant.database);
        if (owner === tenant.role) {
          // Made by an earlier run that stopped before recording it.
          return;
        }
        if (owner !== undefined) {
          throw new ConnectError(
            `a database named "${tenant.database}" already exists on cluster "${cluster}" and belongs to "${owner}", not to the tenant; drop or rename it, then retry`,
            Code.FailedPrecondition,
          );
        }
        const create = (template: string | undefined) =>
          clusters.admin(cluster, (admin) =>
            admin.query(`create database ${database} owner ${role}${template === undefined ? "" : ` template ${pg.escapeIdentifier(template)}`}`),
          );
        if (templates === undefined) {
          await create(undefined);
          return;
        }
        run.latest = await schemas.latestVersions();
        await templates.withTemplate(cluster, run.latest, async (template) => {
          if (template === undefined) {
            return create(undefined);
          }
          try {
            await create(template);
          } catch (error) {
            this.#options.log.warn({ err: error, tenantId: tenant.id }, "copying the template failed; migrating the new database directly");
            await create(undefined);
          }
        });
        return;
      }
      case "secure-database": {
        run.versions = await clusters.inDatabase(cluster, tenant.database, async (client) => {
          await client.query(`revoke connect, temporary on database ${database} from public`);
          await client.query(`alter database ${database} owner to ${role}`);
          if (templates !== undefined) {
            const copied = await client.query("select 1 from pg_roles where rolname = $1", [templates.name]);
            if (copied.rowCount !== 0) {
              // A copy of the template: what the template's role made becomes the tenant's.
              await client.query(`reassign owned by ${pg.escapeIdentifier(templates.name)} to ${role}`);
            }
          }
          return readVersions(client, schemas.entries.map((e) => e.name));
        });
        return;
      }
      case "migrate-schemas": {
        const latest = run.latest ?? (await schemas.latestVersions());
        const versions =
          run.versions ?? (await clusters.inDatabase(cluster, tenant.database, (client) => readVersions(client, schemas.entries.map((e) => e.name))));
        const reported = await Promise.all(
          schemas.entries.map(async ({ name, client }) => {
            if (versions.get(name) === latest.get(name) && latest.get(name) !== undefined) {
              return [name, versions.get(name)!] as const;
            }
            try {
              const result = await client.migrate({ tenantId: tenant.id }, { timeoutMs: this.#options.migrateTimeoutMs });
              return [name, result.version] as const;
            } catch (error) {
              const cause = ConnectError.from(error);
              throw new ConnectError(`${name} could not migrate the tenant's schema: ${cause.rawMessage}`, cause.code);
            }
          }),
        );
        for (const [service, version] of reported) {
          await recordMigrated(em, { tenantId: tenant.id, service, version }, { firstAttempt: true });
        }
        return;
      }
      case "bootstrap": {
        const auth = schemas.entries.find((e) => e.name === "auth");
        if (auth === undefined) {
          return;
        }
        const ownerPassword = tenant.ownerPassword == null ? "" : box.open(tenant.ownerPassword, ownerPasswordContext(tenant.id));
        try {
          await auth.clientOf(AuthService).bootstrapTenant(
            { tenantId: tenant.id, ownerEmail: tenant.ownerEmail ?? "", ownerPassword },
            { timeoutMs: this.#options.migrateTimeoutMs },
          );
        } catch (error) {
          const cause = ConnectError.from(error);
          throw new ConnectError(`auth could not bootstrap the tenant: ${cause.rawMessage}`, cause.code);
        }
        return;
      }
      case "activate":
        await changeTenant(em, tenant, { ownerPassword: null, status: statusNames.active, lifecycleStep: null, error: null });
        return;
    }
  }

  /** Undoes a provisioning: drops the database and the role, clears the ledger, leaves the tenant FAILED. */
  async #rollback(em: EntityManager, tenant: Tenant, reason: string): Promise<void> {
    const { clusters, afterStep } = this.#options;
    await changeTenant(em, tenant, { lifecycleStep: "rollback", error: reason });
    const { cluster, role } = tenant;
    if (cluster != null) {
      // Only what provisioning made: the database it created is owned by the tenant's role.
      if (role != null && (await databaseOwner(clusters, cluster, tenant.database)) === role) {
        await clusters.admin(cluster, (admin) => admin.query(`drop database if exists ${pg.escapeIdentifier(tenant.database)} with (force)`));
      }
      await afterStep?.(tenant.id, "drop-database");
      if (role != null) {
        await clusters.admin(cluster, (admin) => admin.query(`drop role if exists ${pg.escapeIdentifier(role)}`));
        await afterStep?.(tenant.id, "drop-role");
      }
    }
    await forgetVersions(em, tenant.id);
    await changeTenant(em, tenant, { status: statusNames.failed, lifecycleStep: null });
  }
}

/** What one run of the state machine learned, so later steps need not ask again. */
interface RunState {
  latest?: Map<string, string>;
  versions?: Map<string, string>;
}

/** The owner of a database on a cluster, or undefined when there is no such database. */
async function databaseOwner(clusters: ClusterRegistry, cluster: string, database: string): Promise<string | undefined> {
  const { rows } = await clusters.admin(cluster, (admin) =>
    admin.query<{ owner: string }>("select pg_get_userbyid(datdba) as owner from pg_database where datname = $1", [database]),
  );
  return rows[0]?.owner;
}

/** The newest migration of each service's schema in a database, for the services whose schema has a migration table there. */
async function readVersions(client: pg.Client, services: string[]): Promise<Map<string, string>> {
  const versions = new Map<string, string>();
  for (const service of services) {
    const applied = await readAppliedMigrations(client, service);
    if (applied !== undefined) {
      versions.set(service, applied.at(-1) ?? "");
    }
  }
  return versions;
}

/** Both owner fields or neither, checked as Auth will before anything is made; the email trimmed. */
function checkOwner(request: { ownerEmail: string; ownerPassword: string }): { ownerEmail: string; ownerPassword: string } {
  if (request.ownerEmail.trim() === "" && request.ownerPassword === "") {
    return { ownerEmail: "", ownerPassword: "" };
  }
  return { ownerEmail: checkEmail(request.ownerEmail, "owner_email"), ownerPassword: checkPassword(request.ownerPassword, "owner_password") };
}

function checkDisplayName(displayName: string, tenantId: string): string {
  const name = displayName.trim() === "" ? tenantId : displayName.trim();
  if ([...name].length > 200) {
    throw new ConnectError("display_name is longer than 200 characters", Code.InvalidArgument);
  }
  return name;
}

function failure(tenant: Tenant, code: Code): ConnectError {
  return new ConnectError(`provisioning tenant "${tenant.id}" failed and it is left FAILED: ${tenant.error ?? "unknown reason"}; fix the cause and call RetryProvisioning`, code);
}

function describe(error: unknown): string {
  const code = (error as { code?: unknown }).code;
  if (code === "42P04") {
    return "a database with the tenant's name already exists on the server";
  }
  return "an internal error; the Platform log has the detail";
}
