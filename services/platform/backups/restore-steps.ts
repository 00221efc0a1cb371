import { Code, ConnectError } from "@connectrpc/connect";
import type { EntityManager } from "@mikro-orm/postgresql";
import pg from "pg";
import type { Logger, SecretBox } from "../../mesh/index.ts";
import type { ClusterRegistry } from "../cluster-registry.ts";
import type { Restore } from "../entities/restore.ts";
import type { Tenant } from "../entities/tenant.ts";
import {
  allowGeneration,
  type DatabaseStock,
  dropGeneration,
  ensurePooledSchemas,
  pooledProvisioningStepTable,
  provisioningStepTable,
  rollbackStepTable,
  type PooledSchemas,
  type TemplateDatabases,
} from "../provisioning/index.ts";
import type { SchemaServices } from "../schema-services.ts";
import { allowConnections, eachService, migrateDatabase, schemaVersionsIn, type TenantDatabase } from "../tenant-databases.ts";
import {
  changeRestore,
  changeStatus,
  changeTenant,
  findTenant,
  getTenant,
  placementNames,
  pooledSchemaPrefix,
  recordMigrated,
  restoreKinds,
  rolePasswordContext,
  statusNames,
  type RestoreKindName,
} from "../stores/index.ts";
import type { BackupManifest } from "./backup-manifest.ts";
import type { DataKey } from "./backup-envelope.ts";
import { loadBackup } from "./backup-load.ts";
import type { BackupKey, BackupStorage } from "./backup-storage.ts";
import { accessOf, connectAs, loginOf, type TenantAccess } from "./tenant-backups.ts";
import { SchemaNames } from "./tenant-catalog.ts";

/** What restore steps work with, whichever the restore. */
export interface RestoreServices {
  clusters: ClusterRegistry;
  schemas: SchemaServices;
  box: SecretBox;
  storage: BackupStorage;
  /** How long one service may take to migrate one database. */
  migrateTimeoutMs: number;
  /** How long an in-place restore keeps the database (a pooled tenant's: the schemas) it replaced, for an undo. */
  keepMs: number;
  /** As provisioning's: how many pooled tenants one pool database holds at most (a pooled clone chooses one). */
  poolMaxTenants?: number;
  /** As provisioning's: the names of pool databases are this followed by `_<n>`. */
  poolNamePrefix?: string;
  /**
   * The clusters' stocks of ready databases: a restore of a backup taken at
   * the versions a stock database holds takes one instead of creating and
   * migrating a database. Undefined to create every restored database.
   */
  stock?: DatabaseStock;
  /** What the stock's databases are copies of (their objects, the template's role's, are handed over as provisioning hands them). */
  templates?: TemplateDatabases;
  log: Logger;
}

/** What a step works on and with. */
export interface RestoreContext extends RestoreServices {
  /** The EntityManager `restore` was read through. */
  em: EntityManager;
  restore: Restore;
  /** The backup restored: where its files are, its manifest and its data key. */
  backup: { key: BackupKey; manifest: BackupManifest; dataKey: DataKey };
}

/** The work of one step. */
export type RestoreWork = (context: RestoreContext) => Promise<void>;

/** The step recorded with a restore's record (or an undo's request). */
export const requested = "requested";
/** The step recorded while a failed restore is undone. */
export const rollingBack = "rollback";

/**
 * The steps of each kind of restore, in order, after {@link requested}.
 * In place, the restored database is made and loaded while the tenant is
 * served from its own; only `suspend` to `resume` touch the tenant. A
 * clone is a tenant made by provisioning's steps with the backup loaded
 * instead of a fresh schema; a drill loads a scratch database and drops it.
 */
export const restoreSteps = {
  [restoreKinds.inPlace]: ["create-database", "secure-database", "migrate-to-backup", "load", "migrate-forward", "suspend", "switch", "close-previous", "resume"],
  [restoreKinds.clone]: ["create-role", "create-database", "secure-database", "migrate-to-backup", "load", "migrate-forward", "adopt", "activate"],
  [restoreKinds.verify]: ["create-role", "create-database", "secure-database", "migrate-to-backup", "load", "drop-database", "drop-role"],
} as const satisfies Record<RestoreKindName, readonly string[]>;

/**
 * The steps of each kind of restore into the pooled placement, after
 * {@link requested}. In place, a new generation of the tenant's schemas is
 * made in its pool database beside the one serving, loaded, and the
 * tenant's schema prefix switched to it; the generation replaced is kept
 * (its role's privileges on it revoked) for an undo. A clone is a pooled
 * tenant made by provisioning's pooled steps with the backup loaded. (A
 * drill loads a scratch database of its own whatever the backup's
 * placement: the manifest names schemas by service, so that is the same
 * load.)
 */
export const pooledRestoreSteps = {
  [restoreKinds.inPlace]: ["create-schemas", "migrate-to-backup", "load", "migrate-forward", "suspend", "switch", "close-previous", "resume"],
  [restoreKinds.clone]: ["choose-pool", "create-role", "create-schemas", "migrate-to-backup", "load", "migrate-forward", "adopt", "activate"],
} as const satisfies Record<Exclude<RestoreKindName, "verify">, readonly string[]>;

/** The steps of undoing an in-place restore, after {@link requested}. */
export const undoSteps = ["suspend", "switch-back", "drop-restored", "resume"] as const;

export type RestoreStep =
  | (typeof restoreSteps)[RestoreKindName][number]
  | (typeof pooledRestoreSteps)[Exclude<RestoreKindName, "verify">][number]
  | (typeof undoSteps)[number];

/** Whether a restore loads into pooled schemas (of a pool database) rather than a database of its own. */
function isPooled(restore: Pick<Restore, "placement">): boolean {
  return restore.placement === placementNames.pooled;
}

/** The steps of a restore, by its kind and placement. */
export function stepsOf(restore: Pick<Restore, "kind" | "placement">): readonly RestoreStep[] {
  const kind = restore.kind as RestoreKindName;
  return isPooled(restore) && kind !== restoreKinds.verify ? pooledRestoreSteps[kind] : restoreSteps[kind];
}

/** What undoes a failed restore, by its kind and placement (see {@link restoreRollbacks}). */
export function rollbacksOf(restore: Pick<Restore, "kind" | "placement">, undoing: boolean): RestoreWork[] {
  if (undoing) {
    return restoreRollbacks.undo;
  }
  const kind = restore.kind as RestoreKindName;
  return isPooled(restore) && kind !== restoreKinds.verify ? pooledRestoreRollbacks[kind] : restoreRollbacks[kind];
}

/**
 * The last step of each kind that is undone when a later one fails: from
 * then on the restore can only go forward (it is retried), since the
 * tenant is served from what it made.
 */
export const pointOfNoReturn: Record<RestoreKindName, RestoreStep | undefined> = {
  [restoreKinds.inPlace]: "switch",
  [restoreKinds.clone]: undefined,
  [restoreKinds.verify]: undefined,
};

/** The undo's own point of no return. */
export const undoPointOfNoReturn: RestoreStep = "switch-back";

/**
 * The restore's target as provisioning's steps see a tenant: the role that
 * owns the restored database, its sealed password, where the database is.
 * Those steps read nothing else.
 */
function targetOf(context: RestoreContext, tenant?: Tenant): Tenant {
  const { restore } = context;
  if (restore.kind === restoreKinds.verify) {
    return { id: restore.role!, role: restore.role, rolePassword: restore.rolePassword, cluster: restore.cluster, database: restore.database } as Tenant;
  }
  return { id: tenant!.id, role: tenant!.role, rolePassword: tenant!.rolePassword, cluster: restore.cluster, database: restore.database } as Tenant;
}

/**
 * Runs a provisioning step (or rollback step) on the restore's target.
 * Without the template: the database is made at the backup's versions,
 * which need not be the newest (a stock database is taken in
 * create-database only when it holds those versions).
 */
function provisioningStep(
  work: (context: Parameters<RestoreWork>[0] & { tenant: Tenant; templates: TemplateDatabases | undefined; stock: undefined; run: object }) => Promise<void>,
  options: { templates?: boolean } = {},
): RestoreWork {
  return async (context) => {
    const tenant = context.restore.kind === restoreKinds.verify ? undefined : await getTenant(context.em, context.restore.tenantId);
    await work({ ...context, tenant: targetOf(context, tenant), templates: options.templates === true ? context.templates : undefined, stock: undefined, run: {} });
  };
}

/** Each service's newest migration in the backup, by service (a service whose schema had none is left out). */
function backupVersions(manifest: BackupManifest): Map<string, string> {
  const versions = new Map<string, string>();
  for (const [service, { migrations }] of Object.entries(manifest.services)) {
    if (migrations.length > 0) {
      versions.set(service, migrations.at(-1)!);
    }
  }
  return versions;
}

/**
 * Makes the restored database: a ready database of the cluster's stock
 * when one holds exactly the backup's versions (the newest, unless a
 * service was deployed since), taken in one transaction on the cluster as
 * provisioning takes one; else an empty database. Done again after a
 * stop, it finds the database the target's already.
 */
async function createDatabase(context: RestoreContext): Promise<void> {
  const { stock, restore, backup } = context;
  if (stock !== undefined && stock.size > 0) {
    const role = restore.kind === restoreKinds.verify ? restore.role! : (await getTenant(context.em, restore.tenantId)).role!;
    // False when the target exists already (taken before a stop, say): create-database then tells whose it is.
    await stock.take(restore.cluster, backupVersions(backup.manifest), { database: restore.database, role });
  }
  await provisioningStep(provisioningStepTable["create-database"].perform)(context);
}

/**
 * How the restored database (or pooled schemas) is reached, as the role
 * that owns what is restored: a drill's scratch role, the tenant's login,
 * or a pooled tenant's role over its pool database's login.
 */
async function accessOfTarget(context: RestoreContext): Promise<TenantAccess> {
  const { restore, box, em } = context;
  if (restore.kind === restoreKinds.verify) {
    return { login: { user: restore.role!, password: box.open(restore.rolePassword!, rolePasswordContext(restore.role!)) }, sessionRole: "" };
  }
  const tenant = await getTenant(em, restore.tenantId);
  if (isPooled(restore)) {
    return accessOf(em, box, { id: tenant.id, placement: placementNames.pooled, cluster: restore.cluster, database: restore.database, role: tenant.role, rolePassword: null });
  }
  return { login: loginOf(box, tenant), sessionRole: "" };
}

/** The restored database (or pooled schemas of prefix `prefix`, the restore's by default), reached as their owner. */
async function targetDatabase(context: RestoreContext, prefix = context.restore.schemaPrefix): Promise<TenantDatabase> {
  const access = await accessOfTarget(context);
  return { cluster: context.restore.cluster, database: context.restore.database, login: access.login, sessionRole: access.sessionRole, schemaPrefix: prefix };
}

/** The tenant's schemas in its pool database, as a pooled restore sees them. */
async function pooledSchemasOf(context: RestoreContext): Promise<PooledSchemas & { tenantId: string }> {
  const { restore } = context;
  const tenant = await getTenant(context.em, restore.tenantId);
  return { tenantId: tenant.id, cluster: restore.cluster, database: restore.database, role: tenant.role!, base: pooledSchemaPrefix(tenant.id) };
}

/** The schema a pooled load keeps what it set aside in (made with the restore's schemas, dropped after the load). */
function loadStateSchemaOf(restore: Pick<Restore, "schemaPrefix">): string {
  return `${restore.schemaPrefix}tenantry_load`;
}

/** Has each service migrate the restored database: up to `versions` (service → migration), or to its newest. */
async function migrateTarget(context: RestoreContext, versions: Map<string, string> | undefined): Promise<void> {
  // A service added since the backup is left out of `versions`: migrated with the others at the end.
  await migrateDatabase(context, await targetDatabase(context), versions, "the restored database");
}

/**
 * Migrates the restored database to the versions the backup was taken at;
 * a database that holds them already (a stock database's) is left as it is.
 */
async function migrateToBackup(context: RestoreContext): Promise<void> {
  const { manifest } = context.backup;
  const known = new Set(context.schemas.entries.map((e) => e.name));
  for (const service of Object.keys(manifest.services)) {
    if (!known.has(service)) {
      throw new ConnectError(`backup "${manifest.backupId}" holds schema ${service} of a service this Platform does not know (TENANTRY_SCHEMA_SERVICES)`, Code.FailedPrecondition);
    }
  }
  const versions = backupVersions(manifest);
  if (!isPooled(context.restore)) {
    const held = await versionsIn(context, context.restore.database);
    if (held.size === versions.size && [...versions].every(([service, version]) => held.get(service) === version)) {
      return;
    }
  }
  await migrateTarget(context, versions);
}

/**
 * Loads the backup into the restored database (see `loadBackup`), or into
 * the restore's pooled schemas, each manifest schema (a service's name) as
 * the restore's prefix followed by it; a drill also reads every table back.
 */
async function load(context: RestoreContext): Promise<void> {
  const { clusters, restore, storage, backup, log } = context;
  const access = await accessOfTarget(context);
  const connect = () => connectAs(clusters, restore.cluster, restore.database, access);
  const client = await connect();
  const pooled = isPooled(restore) ? { names: new SchemaNames(restore.schemaPrefix), stateSchema: loadStateSchemaOf(restore) } : {};
  try {
    const connection = { config: await clusters.clientConfig(restore.cluster, restore.database, access.login), sessionRole: access.sessionRole };
    await loadBackup({ client, connect, connection, ...backup, storage, readBack: restore.kind === restoreKinds.verify, log, ...pooled });
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Has each service migrate the restored schemas to their newest; a pooled load's state schema is dropped first. */
async function migrateForward(context: RestoreContext): Promise<void> {
  const { clusters, restore } = context;
  if (isPooled(restore)) {
    await clusters.inDatabase(restore.cluster, restore.database, (client) => client.query(`drop schema if exists ${pg.escapeIdentifier(loadStateSchemaOf(restore))} cascade`));
  }
  await migrateTarget(context, undefined);
}

/** Each service's schema version in a database of the restore's cluster (or pooled schemas of `prefix` in its pool database), read as their owner. */
async function versionsIn(context: RestoreContext, database: string, prefix?: string): Promise<Map<string, string>> {
  return schemaVersionsIn(context, { ...(await targetDatabase(context, prefix)), database });
}

/** Records in the ledger the versions of the database (or pooled schemas) the tenant is now served from (Auth's with the catalog merged by Migrate). */
async function recordVersions(context: RestoreContext, database: string, prefix?: string): Promise<void> {
  const { em, restore, schemas } = context;
  const catalog = await schemas.permissionCatalog();
  for (const [service, version] of await versionsIn(context, database, prefix)) {
    const permissionsDigest = service === schemas.auth?.name ? catalog.digest : undefined;
    await recordMigrated(em, { tenantId: restore.tenantId, service, version, ...(permissionsDigest === undefined ? {} : { permissionsDigest }) }, { firstAttempt: true });
  }
}

/** Suspends the tenant for the switch, remembering (before, so that a crash cannot lose it) whether it was ACTIVE. */
async function suspend(context: RestoreContext): Promise<void> {
  const { em, restore } = context;
  const tenant = await getTenant(em, restore.tenantId);
  if (restore.previousStatus == null) {
    if (tenant.status !== statusNames.active && tenant.status !== statusNames.suspended) {
      throw new ConnectError(`tenant "${tenant.id}" is ${tenant.status}: only an ACTIVE or SUSPENDED tenant can be switched`, Code.FailedPrecondition);
    }
    await changeRestore(em, restore, { previousStatus: tenant.status });
  }
  if (restore.previousStatus === statusNames.active) {
    await changeStatus(em, tenant.id, statusNames.active, statusNames.suspended, { suspendedReason: `switching databases for backup ${restore.backupId}` });
  }
}

/** Serves the tenant again if it was ACTIVE before the switch. */
async function resume(context: RestoreContext): Promise<void> {
  const { em, restore } = context;
  if (restore.previousStatus === statusNames.active) {
    await changeStatus(em, restore.tenantId, statusNames.suspended, statusNames.active, { suspendedReason: null });
  }
}

/** Routes the tenant to `database` and records its versions: services follow through the change feed. */
async function route(context: RestoreContext, database: string, prefix: string): Promise<void> {
  await recordVersions(context, database, prefix);
  const tenant = await getTenant(context.em, context.restore.tenantId);
  // A restored database's schemas are named by service; the one it replaced keeps the prefix it had (a tenant moved from a pool may have one).
  await changeTenant(context.em, tenant, { database, schemaPrefix: prefix });
}

/** Makes a database of the restore's cluster refuse (or take again) connections, ending those it has when closed. */
function allowConnectionsTo(context: RestoreContext, database: string, allow: boolean): Promise<void> {
  return allowConnections(context.clusters, context.restore.cluster, database, allow);
}

/** Has every service make the clone's data its own (Auth: new signing keys, no copied sessions). */
async function adopt(context: RestoreContext): Promise<void> {
  const { restore, migrateTimeoutMs } = context;
  await eachService(context.schemas, async ({ name, client }) => {
    try {
      await client.adoptCopy({ tenantId: restore.tenantId, sourceTenantId: restore.sourceTenantId }, { timeoutMs: migrateTimeoutMs });
    } catch (error) {
      const cause = ConnectError.from(error);
      throw new ConnectError(`${name} could not adopt the clone's data: ${cause.rawMessage}`, cause.code);
    }
  });
}

/** Records the clone's versions and makes it ACTIVE. */
async function activate(context: RestoreContext): Promise<void> {
  await recordVersions(context, context.restore.database, context.restore.schemaPrefix);
  const tenant = await getTenant(context.em, context.restore.tenantId);
  await changeTenant(context.em, tenant, { status: statusNames.active, lifecycleStep: null, error: null });
}

/**
 * Routes a pooled tenant to its schemas of `prefix` in its pool database
 * and records their versions: services follow through the change feed,
 * each lease then taking on the new schemas.
 */
async function routeToSchemas(context: RestoreContext, prefix: string): Promise<void> {
  await recordVersions(context, context.restore.database, prefix);
  const tenant = await getTenant(context.em, context.restore.tenantId);
  await changeTenant(context.em, tenant, { schemaPrefix: prefix });
}

/**
 * Chooses a pooled clone's pool database (provisioning's step, on the
 * clone's record) and records it on the restore, whose steps work there.
 */
async function choosePool(context: RestoreContext): Promise<void> {
  const { em, restore } = context;
  const tenant = await getTenant(em, restore.tenantId);
  await pooledProvisioningStepTable["choose-pool"].perform({ ...context, tenant, templates: undefined, stock: undefined, run: {} });
  const chosen = (await getTenant(em.fork(), restore.tenantId)).database;
  await changeRestore(em, restore, { database: chosen });
}

/** A pooled clone's role: provisioning's step, granted to its pool database's login. */
async function createPooledRole(context: RestoreContext): Promise<void> {
  const tenant = await getTenant(context.em, context.restore.tenantId);
  await pooledProvisioningStepTable["create-role"].perform({ ...context, tenant, templates: undefined, stock: undefined, run: {} });
}

/** Makes the restore's schemas in the pool database (each service's, and one for the load's state), owned by the tenant's role. */
async function createSchemas(context: RestoreContext): Promise<void> {
  const { clusters, restore, schemas } = context;
  const tenant = await getTenant(context.em, restore.tenantId);
  await ensurePooledSchemas(clusters, { cluster: restore.cluster, database: restore.database, role: tenant.role, schemaPrefix: restore.schemaPrefix }, [
    ...schemas.entries.map((e) => e.name),
    "tenantry_load",
  ]);
}

/** Drops the restore's pooled schemas (of its generation only), when it has chosen where they go. */
async function dropSchemas(context: RestoreContext): Promise<void> {
  if (context.restore.database === "") {
    return;
  }
  await dropGeneration(context.clusters, await pooledSchemasOf(context), context.restore.schemaPrefix);
}

/** Lets the tenant's role use its schemas of `prefix` again, or stops it (and ends its pool sessions). */
async function allowSchemas(context: RestoreContext, prefix: string, allow: boolean): Promise<void> {
  await allowGeneration(context.clusters, await pooledSchemasOf(context), prefix, allow);
}

/** What each step does. */
export const restoreStepTable: { readonly [S in RestoreStep]: RestoreWork } = {
  "choose-pool": choosePool,
  "create-role": (context) => (isPooled(context.restore) ? createPooledRole(context) : provisioningStep(provisioningStepTable["create-role"].perform)(context)),
  "create-database": createDatabase,
  // With the template known: a stock database's objects are the template's role's until handed over.
  "secure-database": provisioningStep(provisioningStepTable["secure-database"].perform, { templates: true }),
  "create-schemas": createSchemas,
  "migrate-to-backup": migrateToBackup,
  load,
  "migrate-forward": migrateForward,
  suspend,
  switch: (context) => (isPooled(context.restore) ? routeToSchemas(context, context.restore.schemaPrefix) : route(context, context.restore.database, context.restore.schemaPrefix)),
  "close-previous": (context) =>
    isPooled(context.restore) ? allowSchemas(context, context.restore.previousSchemaPrefix!, false) : allowConnectionsTo(context, context.restore.previousDatabase!, false),
  resume,
  adopt,
  activate,
  "drop-database": provisioningStep(rollbackStepTable["drop-database"]),
  "drop-role": provisioningStep(rollbackStepTable["drop-role"]),
  "switch-back": async (context) => {
    const { restore } = context;
    if (isPooled(restore)) {
      await allowSchemas(context, restore.previousSchemaPrefix!, true);
      await routeToSchemas(context, restore.previousSchemaPrefix!);
      await allowSchemas(context, restore.schemaPrefix, false);
      return;
    }
    await allowConnectionsTo(context, restore.previousDatabase!, true);
    await route(context, restore.previousDatabase!, restore.previousSchemaPrefix ?? "");
    await allowConnectionsTo(context, restore.database, false);
  },
  "drop-restored": (context) => (isPooled(context.restore) ? dropSchemas(context) : context.clusters.dropDatabase(context.restore.cluster, context.restore.database)),
};

/**
 * What undoes a failed restore of each kind, before its point of no
 * return: what it made is dropped (only a database or role the restore
 * owns), and the tenant is as it was.
 */
export const restoreRollbacks: Record<RestoreKindName | "undo", RestoreWork[]> = {
  [restoreKinds.inPlace]: [restoreStepTable["drop-database"], resume],
  [restoreKinds.clone]: [restoreStepTable["drop-database"], restoreStepTable["drop-role"]],
  [restoreKinds.verify]: [restoreStepTable["drop-database"], restoreStepTable["drop-role"]],
  undo: [resume],
};

/**
 * What undoes a failed pooled restore: its generation of schemas is
 * dropped (never the one serving, nor the pool database), and a clone's
 * role; the tenant is as it was.
 */
export const pooledRestoreRollbacks: Record<Exclude<RestoreKindName, "verify">, RestoreWork[]> = {
  [restoreKinds.inPlace]: [dropSchemas, resume],
  [restoreKinds.clone]: [dropSchemas, restoreStepTable["drop-role"]],
};

/**
 * Drops what an in-place restore kept past its time: the database it
 * replaced, or a pooled tenant's generation of schemas it replaced (never
 * the pool database).
 */
export async function dropKept(context: RestoreContext): Promise<void> {
  const { restore, clusters } = context;
  if (isPooled(restore)) {
    await dropGeneration(clusters, await pooledSchemasOf(context), restore.previousSchemaPrefix!);
    return;
  }
  await clusters.dropDatabase(restore.cluster, restore.previousDatabase!);
  // Moved to another cluster since: its role there, which a move leaves while it owns this database, goes with it.
  const tenant = await findTenant(context.em, restore.tenantId);
  if (tenant?.role != null && tenant.cluster !== restore.cluster) {
    await clusters.dropRole(restore.cluster, tenant.role).catch((error: { code?: string }) => {
      // 2BP01: it still owns a database a move keeps there; dropped with that database.
      if (error.code !== "2BP01") {
        throw error;
      }
    });
  }
}
