import { Code, ConnectError } from "@connectrpc/connect";
import type { EntityManager } from "@mikro-orm/postgresql";
import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { AuthService } from "../../../gen/tenantry/auth/v1/auth_service_pb.js";
import { readAppliedMigrations, type Logger, type SecretBox } from "../../mesh/index.ts";
import { lockForTransaction } from "../advisory-locks.ts";
import type { ClusterRegistry } from "../cluster-registry.ts";
import type { Tenant } from "../entities/tenant.ts";
import type { SchemaServices } from "../schema-services.ts";
import {
  changeTenant,
  insertPoolDatabase,
  listPoolDatabases,
  ownerPasswordContext,
  placementNames,
  poolPasswordContext,
  poolStates,
  recordMigrated,
  recordPermissionsMerged,
  rolePasswordContext,
  statusNames,
  writeRedoable,
} from "../stores/index.ts";
import type { DatabaseStock } from "./database-stock.ts";
import type { PooledStock } from "./pooled-stock.ts";
import type { TemplateDatabases } from "./template-databases.ts";

/**
 * The steps of provisioning a tenant, in order. Each is idempotent, and the
 * last one done is recorded on the tenant (but for those cheaper to redo
 * than to record: see `redoneOnResume`), so that a Platform that stops
 * anywhere resumes from there.
 */
export const provisioningSteps = ["register", "create-role", "take-database", "create-database", "secure-database", "migrate-schemas", "bootstrap", "activate"] as const;

/**
 * The steps of provisioning a pooled tenant, in order, as resumable as
 * those of a dedicated one: a pool database with room (made when none
 * has), a ready slot of its stock taken when there is one, else the
 * tenant's NOLOGIN role granted to the pool's login and its schemas owned
 * by that role, then migrated and bootstrapped through the services.
 */
export const pooledProvisioningSteps = ["register", "choose-pool", "take-slot", "create-role", "create-schemas", "migrate-schemas", "bootstrap", "activate"] as const;

/** A step of provisioning a dedicated tenant. */
export type DedicatedProvisioningStep = (typeof provisioningSteps)[number];

/** A step of provisioning a pooled tenant. */
export type PooledProvisioningStep = (typeof pooledProvisioningSteps)[number];

export type ProvisioningStep = DedicatedProvisioningStep | PooledProvisioningStep;

/** The steps that undo a provisioning that failed. */
export type RollbackStep = "drop-database" | "drop-schemas" | "drop-role";

/** The step recorded on a tenant while its failed provisioning is undone. */
export const rollingBack = "rollback";

/** What the steps work with, whichever the tenant. */
export interface StepServices {
  clusters: ClusterRegistry;
  schemas: SchemaServices;
  /** The clusters' template databases; undefined to always migrate new databases directly. */
  templates: TemplateDatabases | undefined;
  /** The clusters' stocks of ready databases; undefined to copy or migrate every new database. */
  stock: DatabaseStock | undefined;
  /** The pool databases' stocks of ready slots; undefined to make every pooled tenant's role and schemas. */
  pooledStock?: PooledStock | undefined;
  box: SecretBox;
  /** How long one service may take to migrate (or bootstrap) one tenant. */
  migrateTimeoutMs: number;
  /** How many pooled tenants one pool database holds at most; 1000 when unset. */
  poolMaxTenants?: number;
  /** The names of pool databases (and their roles) are this followed by `_<n>`; "tenantry_pool" when unset. */
  poolNamePrefix?: string;
  log: Logger;
}

/** What a step works on and with. */
export interface StepContext extends StepServices {
  /** The EntityManager `tenant` was read through. */
  em: EntityManager;
  tenant: Tenant;
  /**
   * The step being performed, when it is to be recorded as done on the
   * tenant (provisioning's run, not a restore's or a move's use of a step):
   * a step that writes to the registry anyway records it with that write
   * (see {@link recordWithWork}), saving a transaction.
   */
  recording?: { step: string; recorded: boolean; deferred?: boolean };
  /** What earlier steps of this run learned, so that later ones need not ask again. */
  run: {
    /** The newest version of each service's schema. */
    latest?: Map<string, string>;
    /** The version each service's schema has in the tenant's database. */
    versions?: Map<string, string>;
    /** The versions migrate-schemas found (a slot taken: nothing to migrate), for bootstrap's registry write to record with its own. */
    ledger?: (readonly [service: string, version: string])[];
    /** A pooled tenant's role and schemas are a slot of its pool database's stock, taken by this run. */
    tookSlot?: boolean;
  };
}

/** The work of one step. */
export type StepWork = (context: StepContext) => Promise<void>;

/**
 * Records the step being performed as done on the tenant, as part of the
 * registry write the step is making through `context.em` (flushed with
 * it), when the step is to be recorded at all.
 */
function recordWithWork(context: StepContext): void {
  const { recording, tenant } = context;
  if (recording !== undefined) {
    Object.assign(tenant, { lifecycleStep: recording.step, updatedAt: new Date() });
    recording.recorded = true;
  }
}

/** A step of provisioning: its work, and for a step that makes something, the rollback step that unmakes it. */
export interface ProvisioningStepDefinition {
  perform: StepWork;
  undoneBy?: RollbackStep;
  /**
   * Not recorded as done on its own: its work costs less than a record (a
   * transaction of the registry), and a Platform that stops after it does
   * it again on resuming (every step is idempotent); the next step's record
   * covers it.
   */
  redoneOnResume?: true;
}

/** Gives the tenant its login role, with the password sealed on its record (again, if the role exists). */
async function createRole({ tenant, clusters, box }: StepContext): Promise<void> {
  const role = pg.escapeIdentifier(tenant.role!);
  const password = pg.escapeLiteral(box.open(tenant.rolePassword!, rolePasswordContext(tenant.id)));
  await clusters.admin(tenant.cluster!, async (admin) => {
    const exists = await admin.query("select 1 from pg_roles where rolname = $1", [tenant.role]);
    await admin.query(`${exists.rowCount === 0 ? "create" : "alter"} role ${role} login password ${password}`);
  });
}

/**
 * Takes a ready database of the cluster's stock as the tenant's, owned by
 * its role, when the stock has one at the newest schema versions; else
 * leaves the database to create-database. The take is one transaction on
 * the cluster: done, the database is the tenant's (and create-database
 * finds it so); not done, the stock database is untouched.
 */
async function takeDatabase({ tenant, clusters, schemas, stock, run }: StepContext): Promise<void> {
  if (stock === undefined || stock.size === 0) {
    return;
  }
  const cluster = tenant.cluster!;
  if ((await databaseOwner(clusters, cluster, tenant.database)) !== undefined) {
    // Taken or made by an earlier run, or someone else's: create-database tells.
    return;
  }
  run.latest = await schemas.latestVersions();
  await stock.take(cluster, run.latest, { database: tenant.database, role: tenant.role! });
}

/**
 * Creates the tenant's database, owned by its role: a copy of the
 * cluster's template when there is a current one, else empty. A database
 * of that name owned by anyone else is left alone: FAILED_PRECONDITION.
 */
async function createDatabase({ tenant, clusters, schemas, templates, log, run }: StepContext): Promise<void> {
  const cluster = tenant.cluster!;
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
      admin.query(
        `create database ${pg.escapeIdentifier(tenant.database)} owner ${pg.escapeIdentifier(tenant.role!)}${template === undefined ? "" : ` template ${pg.escapeIdentifier(template)}`}`,
      ),
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
      log.warn({ err: error, tenantId: tenant.id }, "copying the template failed; migrating the new database directly");
      await create(undefined);
    }
  });
}

/**
 * Closes the database to everyone but the tenant's role, hands the role
 * what a template copy (or a stock database, one too) brought, and learns
 * which schema versions it holds: the check that a taken or copied
 * database is current, whatever its name or record said.
 */
async function secureDatabase({ tenant, clusters, schemas, templates, run }: StepContext): Promise<void> {
  const role = pg.escapeIdentifier(tenant.role!);
  const database = pg.escapeIdentifier(tenant.database);
  run.versions = await clusters.inDatabase(tenant.cluster!, tenant.database, async (client) => {
    const copied = templates !== undefined && (await client.query("select 1 from pg_roles where rolname = $1", [templates.name])).rowCount !== 0;
    // One transaction, so one commit to wait for.
    await client.query(
      [
        `revoke connect, temporary on database ${database} from public`,
        `alter database ${database} owner to ${role}`,
        // A copy of the template: what the template's role made becomes the tenant's.
        ...(copied ? [`reassign owned by ${pg.escapeIdentifier(templates.name)} to ${role}`] : []),
      ].join(";\n"),
    );
    return readVersions(client, schemas.entries.map((e) => e.name), tenant.schemaPrefix);
  });
}

/** How many times provisioning asks a service to migrate a tenant that it answered UNAVAILABLE, in all. */
const migrateAttempts = 3;

/**
 * Has every service migrate its schema that is not at its newest version
 * yet, and records the versions in the ledger. A service that answers
 * UNAVAILABLE (its database connection was lost, or, for a pooled tenant,
 * the pool's login was refused the tenant's role) is asked again, a moment
 * later, up to {@link migrateAttempts} times; a pooled tenant's role is
 * granted to its pool's login again first.
 */
async function migrateSchemas(context: StepContext): Promise<void> {
  const { em, tenant, clusters, schemas, migrateTimeoutMs, run } = context;
  const latest = run.latest ?? (await schemas.latestVersions());
  const read = (client: pg.ClientBase) => readVersions(client, schemas.entries.map((e) => e.name), tenant.schemaPrefix);
  // A pool database's admin connection is kept for the next tenant; a tenant's own database is left alone.
  const versions =
    run.versions ??
    (await (tenant.placement === placementNames.pooled ? clusters.inDatabaseKept(tenant.cluster!, tenant.database, read) : clusters.inDatabase(tenant.cluster!, tenant.database, read)));
  let regranted: Promise<void> | undefined;
  const reported = await Promise.all(
    schemas.entries.map(async ({ name, client }) => {
      if (versions.get(name) === latest.get(name) && latest.get(name) !== undefined) {
        return [name, versions.get(name)!] as const;
      }
      for (let attempt = 1; ; attempt++) {
        try {
          const result = await client.migrate({ tenantId: tenant.id }, { timeoutMs: migrateTimeoutMs });
          return [name, result.version] as const;
        } catch (error) {
          const cause = ConnectError.from(error);
          if (cause.code !== Code.Unavailable || attempt === migrateAttempts) {
            throw new ConnectError(`${name} could not migrate the tenant's schema: ${cause.rawMessage}`, cause.code);
          }
          context.log.warn({ tenantId: tenant.id, service: name, attempt, reason: cause.rawMessage }, "a service could not migrate the tenant's schema; asking again");
          await sleep(100 * attempt);
          if (tenant.placement === placementNames.pooled) {
            // Once for all the services that were refused together: two grants at once would collide.
            regranted ??= grantPooledRole(context);
            await regranted;
          }
        }
      }
    }),
  );
  if (run.tookSlot === true && context.recording !== undefined && schemas.auth !== undefined) {
    // Nothing was migrated: bootstrap's registry write records the versions with its own, one transaction fewer.
    // Should that write be lost, a resumed run finds the slot's schemas the tenant's and current, and records them then.
    run.ledger = reported;
    context.recording.deferred = true;
    return;
  }
  await writeRedoable(em, () => recordLedger(context, reported));
}

/** Records the versions a tenant's schemas hold in the ledger, and the step being performed with them. */
async function recordLedger(context: StepContext, reported: readonly (readonly [service: string, version: string])[]): Promise<void> {
  const { em, tenant } = context;
  for (const [service, version] of reported) {
    await recordMigrated(em, { tenantId: tenant.id, service, version }, { firstAttempt: true });
  }
  recordWithWork(context);
}

/**
 * Has Auth set the tenant up (the permission catalog every service
 * declares, its roles, and the owner asked for), when Auth is one of the
 * schema services, and records in the ledger which catalog it merged.
 */
async function bootstrap(context: StepContext): Promise<void> {
  const { em, tenant, schemas, box, migrateTimeoutMs } = context;
  const auth = schemas.auth;
  if (auth === undefined) {
    return;
  }
  const catalog = await schemas.permissionCatalog();
  const ownerPassword = tenant.ownerPassword == null ? "" : box.open(tenant.ownerPassword, ownerPasswordContext(tenant.id));
  // Asked again on UNAVAILABLE as migrate-schemas does (a pooled tenant taking a slot meets its first SET ROLE here).
  for (let attempt = 1; ; attempt++) {
    try {
      await auth
        .clientOf(AuthService)
        .bootstrapTenant({ tenantId: tenant.id, ownerEmail: tenant.ownerEmail ?? "", ownerPassword, permissions: catalog.permissions }, { timeoutMs: migrateTimeoutMs });
      break;
    } catch (error) {
      const cause = ConnectError.from(error);
      if (cause.code !== Code.Unavailable || attempt === migrateAttempts) {
        throw new ConnectError(`auth could not bootstrap the tenant: ${cause.rawMessage}`, cause.code);
      }
      context.log.warn({ tenantId: tenant.id, attempt, reason: cause.rawMessage }, "auth could not bootstrap the tenant; asking again");
      await sleep(100 * attempt);
      if (tenant.placement === placementNames.pooled) {
        await grantPooledRole(context);
      }
    }
  }
  const record = async () => {
    await recordLedger(context, context.run.ledger ?? []);
    await recordPermissionsMerged(em, { tenantId: tenant.id, service: auth.name, permissionsDigest: catalog.digest });
  };
  if (context.recording?.step !== "bootstrap") {
    await writeRedoable(em, record);
    return;
  }
  // Provisioning's last step but activate: the tenant is made ACTIVE in the same transaction, durably, leaving activate nothing to write.
  await em.begin();
  try {
    await record();
    Object.assign(tenant, activation());
    context.recording.recorded = true;
    await em.commit();
  } catch (error) {
    await em.rollback().catch(() => undefined);
    throw error;
  }
}

/** What activating a tenant changes on its record: ACTIVE, its step cleared, the owner's password forgotten. */
function activation(): Pick<Tenant, "ownerPassword" | "status" | "lifecycleStep" | "error" | "updatedAt"> {
  return { ownerPassword: null, status: statusNames.active, lifecycleStep: null, error: null, updatedAt: new Date() };
}

/** Makes the tenant ACTIVE, forgetting the owner's password; recorded with its work (or already, with bootstrap's). */
async function activate({ em, tenant }: StepContext): Promise<void> {
  if (tenant.status === statusNames.active) {
    return;
  }
  await changeTenant(em, tenant, activation());
}

/** Drops the tenant's database, only if provisioning made it: then it is owned by the tenant's role. */
async function dropDatabase({ tenant, clusters }: StepContext): Promise<void> {
  const cluster = tenant.cluster!;
  if (tenant.role != null && (await databaseOwner(clusters, cluster, tenant.database)) === tenant.role) {
    await clusters.dropDatabase(cluster, tenant.database);
  }
}

/** Drops the tenant's login role. */
async function dropRole({ tenant, clusters }: StepContext): Promise<void> {
  if (tenant.role != null) {
    await clusters.dropRole(tenant.cluster!, tenant.role);
  }
}

/**
 * Chooses the pooled tenant's pool database on its cluster: the fullest
 * ready one with room (fill-first keeps pool databases dense), else a new
 * one, made, locked down and recorded here. One cluster's choices are made
 * one at a time, under a lock held until the choice is recorded, so no pool
 * database takes more than its share. Resumable: a choice recorded is kept,
 * and a new pool database is made again (each part checked first) if the
 * run stopped before recording it.
 */
async function choosePool(context: StepContext): Promise<void> {
  const { em, tenant, clusters, box, poolMaxTenants, poolNamePrefix, recording } = context;
  if (tenant.database !== "") {
    // Chosen with the tenant's record (see TenantProvisioner.create) or by an earlier run: recorded with the choice.
    if (recording !== undefined) {
      recording.deferred = true;
    }
    return;
  }
  tenant.database = await choosePoolDatabase(em, clusters, box, tenant.cluster!, { poolMaxTenants, poolNamePrefix }, async (tx, chosen) => {
    // The step recorded with the choice, when it is to be.
    await tx.execute("update platform.tenants set database = ?, lifecycle_step = coalesce(?, lifecycle_step), updated_at = now() where id = ?", [chosen, recording?.step ?? null, tenant.id]);
  });
  if (recording !== undefined) {
    tenant.lifecycleStep = recording.step;
    recording.recorded = true;
  }
}

/**
 * Chooses a pool database of `cluster` for one more tenant, as provisioning
 * does (see choosePool), making a new one when none has room, and has
 * `record` record the choice in the same transaction, under the cluster's
 * pool lock. Returns its name.
 */
export async function choosePoolDatabase(
  em: EntityManager,
  clusters: ClusterRegistry,
  box: SecretBox,
  cluster: string,
  { poolMaxTenants = 1000, poolNamePrefix = "tenantry_pool" }: { poolMaxTenants?: number | undefined; poolNamePrefix?: string | undefined },
  record: (tx: EntityManager, chosen: string) => Promise<void>,
): Promise<string> {
  return em.transactional(async (tx) => {
    const chosen = await choosePoolDatabaseIn(tx, clusters, box, cluster, { poolMaxTenants, poolNamePrefix });
    await record(tx, chosen);
    return chosen;
  });
}

/**
 * {@link choosePoolDatabase} inside the caller's transaction `tx`, which
 * holds the cluster's pool lock from here on and is to record the choice
 * (the tenant's record with its pool database's name, counted there).
 */
export async function choosePoolDatabaseIn(
  tx: EntityManager,
  clusters: ClusterRegistry,
  box: SecretBox,
  cluster: string,
  { poolMaxTenants = 1000, poolNamePrefix = "tenantry_pool" }: { poolMaxTenants?: number | undefined; poolNamePrefix?: string | undefined },
): Promise<string> {
  await lockForTransaction(tx, `pool:${cluster}`);
  const pools = await listPoolDatabases(tx, cluster);
  // Tenants moving in count as held: each takes its place once switched.
  const roomy = pools.filter((p) => p.state === poolStates.ready && p.tenantCount + p.arriving < poolMaxTenants).sort((a, b) => b.tenantCount + b.arriving - (a.tenantCount + a.arriving));
  let chosen = roomy[0]?.name;
  if (chosen === undefined) {
    chosen = nextPoolName(poolNamePrefix, pools.map((p) => p.name));
    const password = randomBytes(24).toString("base64url");
    await setUpPoolDatabase(clusters, cluster, chosen, password);
    await insertPoolDatabase(tx, { cluster, name: chosen, role: chosen, rolePassword: box.seal(password, poolPasswordContext(cluster, chosen)), state: poolStates.ready });
  }
  return chosen;
}

/** The first `<prefix>_<n>` not taken by `taken`. */
function nextPoolName(prefix: string, taken: string[]): string {
  for (let n = taken.length + 1; ; n++) {
    const name = `${prefix.slice(0, 50)}_${n}`;
    if (!taken.includes(name)) {
      return name;
    }
  }
}

/**
 * Makes a pool database and its login role as the pooled placement lays
 * them out, each part only if it is not there yet: the role LOGIN NOINHERIT
 * (it acts only through SET ROLE to a tenant's role), the only one that may
 * connect, its path `pg_catalog` (an unqualified name finds nothing until a
 * lease sets the tenant's schema), and nobody may create in `public`.
 */
async function setUpPoolDatabase(clusters: ClusterRegistry, cluster: string, name: string, password: string): Promise<void> {
  const id = pg.escapeIdentifier(name);
  await clusters.admin(cluster, async (admin) => {
    const role = await admin.query("select 1 from pg_roles where rolname = $1", [name]);
    await admin.query(`${role.rowCount === 0 ? "create" : "alter"} role ${id} login noinherit password ${pg.escapeLiteral(password)}`);
    const database = await admin.query("select 1 from pg_database where datname = $1", [name]);
    if (database.rowCount === 0) {
      await admin.query(`create database ${id}`);
    }
    await admin.query(`revoke all on database ${id} from public`);
    await admin.query(`grant connect on database ${id} to ${id}`);
    await admin.query(`alter role ${id} in database ${id} set search_path = pg_catalog`);
  });
  await clusters.inDatabase(cluster, name, (client) => client.query("revoke all on schema public from public"));
}

/** The login role of a pooled tenant's pool database (named as the database). */
function poolRoleOf(tenant: Tenant): string {
  return tenant.database;
}

/**
 * Gives a pooled tenant its role: NOLOGIN, owner of its schemas, granted to
 * its pool database's login to be taken on with SET ROLE only (not
 * inherited).
 */
async function createPooledRole({ tenant, clusters, run }: StepContext): Promise<void> {
  if (run.tookSlot === true) {
    // The slot's role, renamed, keeps its grant to the pool's login.
    return;
  }
  await grantPooledRole({ tenant, clusters });
}

/** Makes a pooled tenant's role NOLOGIN (creating it if needed) and grants it to its pool's login again. */
async function grantPooledRole({ tenant, clusters }: Pick<StepContext, "tenant" | "clusters">): Promise<void> {
  const role = pg.escapeIdentifier(tenant.role!);
  await clusters.admin(tenant.cluster!, async (admin) => {
    const { rows } = await admin.query<{ exists: boolean; version: number }>(
      "select exists (select 1 from pg_roles where rolname = $1) as exists, current_setting('server_version_num')::int as version",
      [tenant.role],
    );
    // From PostgreSQL 16 a grant says how it may be used; before, the pool role's NOINHERIT does the same.
    const options = rows[0]!.version >= 160000 ? " with inherit false, set true" : "";
    // One statement list, one transaction: the role is made with its grant, or not at all.
    await admin.query(`${rows[0]!.exists ? "alter" : "create"} role ${role} nologin;\ngrant ${role} to ${pg.escapeIdentifier(poolRoleOf(tenant))}${options}`);
  });
}

/**
 * Takes a ready slot of the pool database's stock as the tenant's, when
 * the stock has one at the newest schema versions: its role and schemas
 * renamed the tenant's in one transaction on the pool database, so that
 * create-role, create-schemas and migrate-schemas find them made (and
 * this run skips their checks). Not taken, nothing changed: those steps
 * make them.
 */
async function takeSlot({ tenant, clusters, schemas, pooledStock, run }: StepContext): Promise<void> {
  if (pooledStock === undefined || pooledStock.size === 0) {
    return;
  }
  // Asked only when the stock has a slot, as the services on the connections open now answer: a slot is handed out only at the
  // versions the services have now, never behind a deploy (a redeployed service is on a new connection, and asked afresh).
  // Services that do not answer leave the tenant's role and schemas to be made; migrate-schemas tells them.
  const newest = () => schemas.connectedVersions().catch(() => undefined);
  const taken = await pooledStock.take(tenant.cluster!, tenant.database, newest, { role: tenant.role!, schemaPrefix: tenant.schemaPrefix });
  if (taken !== undefined) {
    run.latest = taken.latest;
  }
  if (taken?.versions !== undefined) {
    run.versions = taken.versions;
    run.tookSlot = true;
  }
}

/**
 * Creates the pooled tenant's schema of every schema service in its pool
 * database, owned by its role (which may not create schemas there itself).
 * A schema of that name owned by anyone else is left alone:
 * FAILED_PRECONDITION.
 */
async function createSchemas({ tenant, clusters, schemas, run }: StepContext): Promise<void> {
  if (run.tookSlot === true) {
    // Renamed from the slot's, owned by the tenant's role, in the take's transaction.
    return;
  }
  const services = schemas.entries.map((e) => e.name);
  const made = await ensurePooledSchemas(clusters, tenant, services);
  if (made === services.length) {
    // All made now, so none holds a migration yet: migrate-schemas need not look.
    run.versions = new Map();
  }
}

/**
 * Creates a pooled tenant's schemas of `services` that its pool database
 * does not hold yet, owned by its role: provisioning makes them all, and a
 * fleet migration those of a service added since. FAILED_PRECONDITION for a
 * schema of that name owned by anyone else. Returns how many it made.
 */
export async function ensurePooledSchemas(clusters: ClusterRegistry, tenant: Pick<Tenant, "cluster" | "database" | "role" | "schemaPrefix">, services: string[]): Promise<number> {
  return clusters.inDatabaseKept(tenant.cluster!, tenant.database, async (client) => {
    const names = services.map((name) => tenant.schemaPrefix + name);
    const { rows } = await client.query<{ schema: string; owner: string }>(
      "select nspname as schema, pg_get_userbyid(nspowner) as owner from pg_namespace where nspname = any($1)",
      [names],
    );
    const owners = new Map(rows.map((r) => [r.schema, r.owner]));
    const missing: string[] = [];
    for (const schema of names) {
      const owner = owners.get(schema);
      if (owner === undefined) {
        missing.push(`create schema ${pg.escapeIdentifier(schema)} authorization ${pg.escapeIdentifier(tenant.role!)}`);
      } else if (owner !== tenant.role) {
        throw new ConnectError(
          `a schema named "${schema}" already exists in pool database "${tenant.database}" and belongs to "${owner}", not to the tenant; drop or rename it, then retry`,
          Code.FailedPrecondition,
        );
      }
    }
    if (missing.length > 0) {
      // One statement list, one transaction: all made, or none.
      await client.query(missing.join(";\n"));
    }
    return missing.length;
  });
}

/** Drops a pooled tenant's schemas (with everything in them), only those its role owns; never the pool database. */
async function dropSchemas({ tenant, clusters }: StepContext): Promise<void> {
  await dropPooledSchemas(clusters, tenant);
}

/**
 * Drops a pooled tenant's schemas (with everything in them), every one its
 * role owns in its pool database, of any generation (an in-place restore
 * keeps the schemas it replaced for a while); never the pool database.
 */
export async function dropPooledSchemas(clusters: ClusterRegistry, tenant: Pick<Tenant, "cluster" | "database" | "role" | "schemaPrefix">): Promise<void> {
  if (tenant.database === "" || tenant.role == null || tenant.schemaPrefix === "") {
    return;
  }
  const present = await clusters.admin(tenant.cluster!, (admin) => admin.query("select 1 from pg_database where datname = $1", [tenant.database]));
  if (present.rowCount === 0) {
    return;
  }
  await clusters.inDatabase(tenant.cluster!, tenant.database, async (client) => {
    const { rows } = await client.query<{ schema: string }>(
      "select nspname as schema from pg_namespace where nspowner = (select oid from pg_roles where rolname = $1)",
      [tenant.role],
    );
    for (const { schema } of rows) {
      await client.query(`drop schema if exists ${pg.escapeIdentifier(schema)} cascade`);
    }
  });
}

/** What each provisioning step does, and which rollback step undoes it. */
export const provisioningStepTable: { readonly [S in DedicatedProvisioningStep]: ProvisioningStepDefinition } = {
  // The record is made with this step (see TenantProvisioner.create).
  register: { perform: async () => {} },
  "create-role": { perform: createRole, undoneBy: "drop-role" },
  "take-database": { perform: takeDatabase, undoneBy: "drop-database" },
  "create-database": { perform: createDatabase, undoneBy: "drop-database" },
  "secure-database": { perform: secureDatabase },
  "migrate-schemas": { perform: migrateSchemas },
  bootstrap: { perform: bootstrap },
  activate: { perform: activate },
};

/** What each step of provisioning a pooled tenant does, and which rollback step undoes it. */
export const pooledProvisioningStepTable: { readonly [S in PooledProvisioningStep]: ProvisioningStepDefinition } = {
  register: provisioningStepTable.register,
  // Nothing to undo: the pool database is shared, and its record counts only tenants that hold a place in it.
  "choose-pool": { perform: choosePool },
  // A slot renamed the tenant's in one transaction of the pool database; taken again (or not) on resuming.
  "take-slot": { perform: takeSlot, undoneBy: "drop-schemas", redoneOnResume: true },
  // Two catalog statements each, on connections kept open: redone sooner than recorded.
  "create-role": { perform: createPooledRole, undoneBy: "drop-role", redoneOnResume: true },
  "create-schemas": { perform: createSchemas, undoneBy: "drop-schemas", redoneOnResume: true },
  "migrate-schemas": provisioningStepTable["migrate-schemas"],
  bootstrap: provisioningStepTable.bootstrap,
  activate: provisioningStepTable.activate,
};

/** What each rollback step does. Each is idempotent, and harmless where its step was never done. */
export const rollbackStepTable: { readonly [S in RollbackStep]: StepWork } = {
  "drop-database": dropDatabase,
  "drop-schemas": dropSchemas,
  "drop-role": dropRole,
};

/** The rollback steps, in the order they run: the reverse of the steps they undo. */
export const rollbackSteps: readonly RollbackStep[] = [...new Set(provisioningSteps.toReversed().flatMap((step) => provisioningStepTable[step].undoneBy ?? []))];

/** The rollback steps of a pooled tenant, in the order they run. */
export const pooledRollbackSteps: readonly RollbackStep[] = [
  ...new Set(pooledProvisioningSteps.toReversed().flatMap((step) => pooledProvisioningStepTable[step].undoneBy ?? [])),
];

/** The steps of provisioning a tenant of a placement, their work, and the steps undoing them. */
export function provisioningPlanOf(placement: string): {
  steps: readonly ProvisioningStep[];
  table: { readonly [step: string]: ProvisioningStepDefinition };
  rollback: readonly RollbackStep[];
} {
  return placement === placementNames.pooled
    ? { steps: pooledProvisioningSteps, table: pooledProvisioningStepTable, rollback: pooledRollbackSteps }
    : { steps: provisioningSteps, table: provisioningStepTable, rollback: rollbackSteps };
}

/** The owner of a database on a cluster, or undefined when there is no such database. */
async function databaseOwner(clusters: ClusterRegistry, cluster: string, database: string): Promise<string | undefined> {
  const { rows } = await clusters.admin(cluster, (admin) =>
    admin.query<{ owner: string }>("select pg_get_userbyid(datdba) as owner from pg_database where datname = $1", [database]),
  );
  return rows[0]?.owner;
}

/**
 * The newest migration of each service's schema in a database, for the
 * services whose schema has a migration table there; a service's schema is
 * `prefix` followed by its name.
 */
async function readVersions(client: pg.ClientBase, services: string[], prefix = ""): Promise<Map<string, string>> {
  const versions = new Map<string, string>();
  for (const service of services) {
    const applied = await readAppliedMigrations(client, prefix + service);
    if (applied !== undefined) {
      versions.set(service, applied.at(-1) ?? "");
    }
  }
  return versions;
}
