import { Code, ConnectError } from "@connectrpc/connect";
import type { EntityManager } from "@mikro-orm/postgresql";
import type { Logger, SecretBox } from "../../mesh/index.ts";
import type { ClusterRegistry } from "../cluster-registry.ts";
import type { Restore } from "../entities/restore.ts";
import type { Tenant } from "../entities/tenant.ts";
import { provisioningStepTable, rollbackStepTable } from "../provisioning/index.ts";
import type { SchemaServices } from "../schema-services.ts";
import { allowConnections, eachService, migrateDatabase, schemaVersionsIn, type TenantDatabase } from "../tenant-databases.ts";
import {
  changeRestore,
  changeStatus,
  changeTenant,
  getTenant,
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
import { loginOf } from "./tenant-backups.ts";

/** What restore steps work with, whichever the restore. */
export interface RestoreServices {
  clusters: ClusterRegistry;
  schemas: SchemaServices;
  box: SecretBox;
  storage: BackupStorage;
  /** How long one service may take to migrate one database. */
  migrateTimeoutMs: number;
  /** How long an in-place restore keeps the database it replaced, for an undo. */
  keepMs: number;
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

/** The steps of undoing an in-place restore, after {@link requested}. */
export const undoSteps = ["suspend", "switch-back", "drop-restored", "resume"] as const;

export type RestoreStep = (typeof restoreSteps)[RestoreKindName][number] | (typeof undoSteps)[number];

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

/** Runs a provisioning step (or rollback step) on the restore's target. */
function provisioningStep(work: (context: Parameters<RestoreWork>[0] & { tenant: Tenant; templates: undefined; stock: undefined; run: object }) => Promise<void>): RestoreWork {
  return async (context) => {
    const tenant = context.restore.kind === restoreKinds.verify ? undefined : await getTenant(context.em, context.restore.tenantId);
    // No template nor stock: the database is made at the backup's versions, which need not be the newest.
    await work({ ...context, tenant: targetOf(context, tenant), templates: undefined, stock: undefined, run: {} });
  };
}

/** The role the restored database is reached as, and its password. */
async function loginOfTarget(context: RestoreContext): Promise<{ user: string; password: string }> {
  const { restore, box } = context;
  if (restore.kind === restoreKinds.verify) {
    return { user: restore.role!, password: box.open(restore.rolePassword!, rolePasswordContext(restore.role!)) };
  }
  return loginOf(box, await getTenant(context.em, restore.tenantId));
}

/** The restored database, reached as its owner. */
async function targetDatabase(context: RestoreContext): Promise<TenantDatabase> {
  return { cluster: context.restore.cluster, database: context.restore.database, login: await loginOfTarget(context) };
}

/** Has each service migrate the restored database: up to `versions` (service → migration), or to its newest. */
async function migrateTarget(context: RestoreContext, versions: Map<string, string> | undefined): Promise<void> {
  // A service added since the backup is left out of `versions`: migrated with the others at the end.
  await migrateDatabase(context, await targetDatabase(context), versions, "the restored database");
}

/** Migrates the restored database to the versions the backup was taken at. */
async function migrateToBackup(context: RestoreContext): Promise<void> {
  const { manifest } = context.backup;
  const known = new Set(context.schemas.entries.map((e) => e.name));
  const versions = new Map<string, string>();
  for (const [service, { migrations }] of Object.entries(manifest.services)) {
    if (!known.has(service)) {
      throw new ConnectError(`backup "${manifest.backupId}" holds schema ${service} of a service this Platform does not know (TENANTRY_SCHEMA_SERVICES)`, Code.FailedPrecondition);
    }
    if (migrations.length > 0) {
      versions.set(service, migrations.at(-1)!);
    }
  }
  await migrateTarget(context, versions);
}

/** Loads the backup into the restored database (see `loadBackup`); a drill also reads every table back. */
async function load(context: RestoreContext): Promise<void> {
  const { clusters, restore, storage, backup, log } = context;
  const login = await loginOfTarget(context);
  const connect = () => clusters.connect(restore.cluster, restore.database, login);
  const client = await connect();
  try {
    await loadBackup({ client, connect, ...backup, storage, readBack: restore.kind === restoreKinds.verify, log });
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Each service's schema version in the restored (or any) database of the restore's cluster, read as its owner. */
async function versionsIn(context: RestoreContext, database: string): Promise<Map<string, string>> {
  return schemaVersionsIn(context, { ...(await targetDatabase(context)), database });
}

/** Records in the ledger the versions of the database the tenant is now served from (Auth's with the catalog merged by Migrate). */
async function recordVersions(context: RestoreContext, database: string): Promise<void> {
  const { em, restore, schemas } = context;
  const catalog = await schemas.permissionCatalog();
  for (const [service, version] of await versionsIn(context, database)) {
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
async function route(context: RestoreContext, database: string): Promise<void> {
  await recordVersions(context, database);
  const tenant = await getTenant(context.em, context.restore.tenantId);
  await changeTenant(context.em, tenant, { database });
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
  await recordVersions(context, context.restore.database);
  const tenant = await getTenant(context.em, context.restore.tenantId);
  await changeTenant(context.em, tenant, { status: statusNames.active, lifecycleStep: null, error: null });
}

/** What each step does. */
export const restoreStepTable: { readonly [S in RestoreStep]: RestoreWork } = {
  "create-role": provisioningStep(provisioningStepTable["create-role"].perform),
  "create-database": provisioningStep(provisioningStepTable["create-database"].perform),
  "secure-database": provisioningStep(provisioningStepTable["secure-database"].perform),
  "migrate-to-backup": migrateToBackup,
  load,
  "migrate-forward": (context) => migrateTarget(context, undefined),
  suspend,
  switch: (context) => route(context, context.restore.database),
  "close-previous": (context) => allowConnectionsTo(context, context.restore.previousDatabase!, false),
  resume,
  adopt,
  activate,
  "drop-database": provisioningStep(rollbackStepTable["drop-database"]),
  "drop-role": provisioningStep(rollbackStepTable["drop-role"]),
  "switch-back": async (context) => {
    await allowConnectionsTo(context, context.restore.previousDatabase!, true);
    await route(context, context.restore.previousDatabase!);
    await allowConnectionsTo(context, context.restore.database, false);
  },
  "drop-restored": (context) => context.clusters.dropDatabase(context.restore.cluster, context.restore.database),
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
