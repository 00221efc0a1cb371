import { Code, ConnectError } from "@connectrpc/connect";
import type { EntityManager } from "@mikro-orm/postgresql";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import type { Logger, SecretBox } from "../../mesh/index.ts";
import { maxFreezeTtlMs } from "../freezes/index.ts";
import { keyOf, listSequences, listTables, loadBackup, loginOf, quoted, SchemaNames, type CatalogTable, type TenantBackups } from "../backups/index.ts";
import type { ClusterRegistry } from "../cluster-registry.ts";
import type { Move } from "../entities/move.ts";
import type { Tenant } from "../entities/tenant.ts";
import { dropPooledSchemas, ensurePooledSchemas, provisioningStepTable, rollbackStepTable } from "../provisioning/index.ts";
import type { SchemaServices } from "../schema-services.ts";
import { changeMove, findPoolDatabase, forgetKeptGenerations, getTenant, moveModes, placementNames, poolPasswordContext, recordMoveProgress, recordSwitch, type MoveModeName } from "../stores/index.ts";
import { allowConnections, migrateDatabase, readSchemaVersions, schemaVersionsIn, type TenantDatabase } from "../tenant-databases.ts";
import {
  createMarkerTable,
  createSlotWithSnapshot,
  dropMarkerTable,
  dropPublication,
  dropSlot,
  dropSubscription,
  markerArrived,
  markerTable,
  moveMarkerTable,
  publish,
  replicationName,
  subscribe,
  subscriptionProgress,
  writeMarker,
  type MarkerTable,
  type SubscriptionProgress,
} from "./logical-replication.ts";
import { endRoleSessions } from "./role-sessions.ts";
import { copyInSnapshot } from "./snapshot-copy.ts";
import { compareTables, type ComparedTable } from "./table-comparison.ts";
import type { FrozenTenant, Release, WriteFreeze } from "./write-freeze.ts";

/** What move steps work with, whichever the move. */
export interface MoveServices {
  clusters: ClusterRegistry;
  schemas: SchemaServices;
  box: SecretBox;
  /** Takes the copy of a copy under freeze, as a backup. */
  backups: TenantBackups;
  /** Freezes the tenant's writes for the cutover: every service holds them, reads go on. */
  freeze: WriteFreeze;
  /** Makes the tenant's source database refuse writes, whoever sends them: added to `freeze` for a copy under freeze. */
  fence: WriteFreeze;
  /** How long one service may take to migrate one database. */
  migrateTimeoutMs: number;
  /** How long a moved tenant's source database is kept, closed, before it is dropped. */
  keepMs: number;
  /** How long the cutover waits for its marker row on the target, its writes frozen, before it gives up. */
  cutoverTimeoutMs: number;
  /** Table data the initial copy of an online move copies per second (its pace); 0 for no limit. */
  copyBytesPerSecond: number;
  /** How long replication may go on failing (the target's workers erring) without progress before the move gives up. */
  stallMs: number;
  /** How often replication's progress is looked at. */
  pollMs: number;
  log: Logger;
}

/** What a step works on and with. */
export interface MoveContext extends MoveServices {
  /** The EntityManager `move` was read through. */
  em: EntityManager;
  move: Move;
  /** The tenant moved: its role and password. */
  tenant: Tenant;
  /**
   * Called at points inside a step (for crash tests): "copy-tables:copying"
   * once the first table is copied, "cutover:frozen" once the writes are frozen.
   */
  reached: (point: string) => Promise<void>;
  /** Aborts when Platform stops: waits end at once (the move is resumed at the next start). */
  signal: AbortSignal;
}

/** The work of one step. */
export type MoveWork = (context: MoveContext) => Promise<void>;

/** The step recorded with a move's record. */
export const requested = "requested";
/** The step recorded while a failed move is undone. */
export const rollingBack = "rollback";

/**
 * The steps of each mode, in order, after {@link requested}. The target
 * database is made at the tenant's schema versions first, then online the
 * source publishes, its tables are copied at a pace into the target in the
 * snapshot of a new replication slot, and the target subscribes through
 * that slot and catches up, all while the tenant is served; the cutover
 * freezes the tenant's writes (under freeze: copies), checks, and switches
 * the route; what replication made is removed, and the source closed.
 */
export const moveSteps = {
  [moveModes.online]: [
    "create-role",
    "create-database",
    "secure-database",
    "migrate-schemas",
    "publish",
    "copy-tables",
    "subscribe",
    "initial-copy",
    "catch-up",
    "cutover",
    "remove-replication",
    "close-source",
  ],
  [moveModes.copyUnderFreeze]: ["create-role", "create-database", "secure-database", "migrate-schemas", "cutover", "close-source"],
} as const satisfies Record<MoveModeName, readonly string[]>;

export type MoveStep = (typeof moveSteps)[MoveModeName][number];

/**
 * The step that switches the tenant's route, recorded with the switch in
 * one transaction: a failure before it is rolled back, one after it is
 * retried, since the tenant is served from the target.
 */
export const pointOfNoReturn: MoveStep = "cutover";

/** How many times the cutover tries to freeze the tenant's writes. */
const freezeAttempts = 3;

/** How often the cutover looks for its marker row: the tenant's writes wait meanwhile. */
const cutoverPollMs = 5;

/** The migration tables are each service's own in each database; everything else of a service's schema is moved. */
const migrationTable = "mikro_orm_migrations";

/** The move's target as provisioning's steps see a tenant: its role and sealed password (a promotion's new one), the target's cluster, database and schema prefix. */
function targetTenant({ tenant, move }: MoveContext): Tenant {
  const rolePassword = promotes(move) ? move.targetRolePassword : tenant.rolePassword;
  return { id: tenant.id, role: tenant.role, rolePassword, cluster: move.targetCluster, database: move.targetDatabase, schemaPrefix: move.targetSchemaPrefix } as Tenant;
}

/** Whether the tenant's schemas are in a pool database at the source. */
function pooledSource(move: Move): boolean {
  return move.sourcePlacement === placementNames.pooled;
}

/** Whether the move promotes a pooled tenant to a database of its own. */
function promotes(move: Move): boolean {
  return pooledSource(move) && move.targetPlacement === placementNames.dedicated;
}

/** Whether the tenant's schemas go into a pool database. */
function pooledTarget(move: Move): boolean {
  return move.targetPlacement === placementNames.pooled;
}

/** The prefix of the services' schemas at the source: the tenant's when the move began. */
function sourcePrefix(move: Move): string {
  return move.sourceSchemaPrefix;
}

/**
 * The target's schema of a source's schema. A move keeps the tenant's
 * prefix, but for a tenant without one going into a pool database (a
 * promotion keeps it too: logical replication matches tables by their
 * qualified names, and the route keeps its prefix, so nothing is renamed
 * under the freeze).
 */
function targetSchemaOf(move: Move): (schema: string) => string {
  return (schema) => move.targetSchemaPrefix + schema.slice(move.sourceSchemaPrefix.length);
}

/** The login of the target's pool database (a move into a pool database). */
async function poolLogin({ em, move, box }: MoveContext): Promise<{ user: string; password: string }> {
  const pool = await findPoolDatabase(em, move.targetCluster, move.targetDatabase);
  if (pool === undefined) {
    throw new ConnectError(`pool database "${move.targetDatabase}" of cluster "${move.targetCluster}" is not recorded`, Code.FailedPrecondition);
  }
  return { user: pool.role, password: box.open(pool.rolePassword, poolPasswordContext(pool.cluster, pool.name)) };
}

/** Connects to the target as the tenant's role: its own login, or into a pool database its pool's login taking on the tenant's role. */
async function connectTarget(context: MoveContext): Promise<pg.Client> {
  const { clusters, move, tenant } = context;
  if (!pooledTarget(move)) {
    return clusters.connect(move.targetCluster, move.targetDatabase, targetDatabase(context).login);
  }
  const client = await clusters.connect(move.targetCluster, move.targetDatabase, await poolLogin(context));
  try {
    await client.query(`set role ${pg.escapeIdentifier(tenant.role!)}`);
  } catch (error) {
    await client.end().catch(() => undefined);
    throw error;
  }
  return client;
}

/** The physical schemas of `services` under `prefix`. */
function physical(services: Iterable<string>, prefix: string): string[] {
  return [...services].map((service) => prefix + service);
}

/** The table the move's marker rows go through: the move's own out of a pool database. */
function markerOf(move: Move): MarkerTable {
  return pooledSource(move) ? moveMarkerTable(move.id) : markerTable;
}

/** Runs a provisioning step (or rollback step) on the move's target. */
function provisioningStep(work: (context: MoveContext & { tenant: Tenant; templates: undefined; stock: undefined; run: object }) => Promise<void>): MoveWork {
  // No template nor stock: the database is made at the source's versions, which need not be the newest.
  return (context) => work({ ...context, tenant: targetTenant(context), templates: undefined, stock: undefined, run: {} });
}

/** The source database; a pooled source's login is never used (it is the pool's, shared): the admin reads it. */
function sourceDatabase({ move, tenant, box }: MoveContext): TenantDatabase {
  const login = pooledSource(move) ? { user: "", password: "" } : loginOf(box, tenant);
  return { cluster: move.sourceCluster, database: move.sourceDatabase, login, schemaPrefix: sourcePrefix(move) };
}

/** The target database; into a pool database, its login is the pool's (see {@link poolLogin}) and never read here. */
function targetDatabase(context: MoveContext): TenantDatabase {
  const { move, box } = context;
  const login = pooledTarget(move) ? { user: "", password: "" } : loginOf(box, targetTenant(context));
  return { cluster: move.targetCluster, database: move.targetDatabase, login, schemaPrefix: move.targetSchemaPrefix };
}

/** Runs `fn` on a connection to a tenant database, as its owner (the tenant's role) or as the cluster's admin. */
async function inDatabase<T>(context: MoveContext, database: TenantDatabase, as: "owner" | "admin", fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = await context.clusters.connect(database.cluster, database.database, as === "owner" ? database.login : undefined);
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Runs `fn` on a connection to the target as the tenant's role: its own login, or into a pool database the pool's login taking on the role (see {@link connectTarget}). */
async function asTargetOwner<T>(context: MoveContext, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = await connectTarget(context);
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Like {@link inDatabase}, doing nothing when the database does not exist (what a rollback or a cleanup finds). */
async function inExistingDatabase(context: MoveContext, database: TenantDatabase, fn: (client: pg.Client) => Promise<void>): Promise<void> {
  const { rowCount } = await context.clusters.admin(database.cluster, (admin) => admin.query("select 1 from pg_database where datname = $1 and datallowconn", [database.database]));
  if (rowCount !== 0) {
    await inDatabase(context, database, "admin", fn);
  }
}

/** The tables of `schemas` a move carries: all but the migration tables. */
async function movedTables(client: pg.ClientBase, schemas: string[]): Promise<ComparedTable[]> {
  return (await listTables(client, schemas)).filter((t) => t.name !== migrationTable).map(({ schema, name }) => ({ schema, name }));
}

/** The services that have a schema at the source, by their versions there (a pooled source read by the admin). */
async function sourceVersions(context: MoveContext): Promise<Map<string, string>> {
  if (!pooledSource(context.move)) {
    return schemaVersionsIn(context, sourceDatabase(context));
  }
  // The pool's login reads nothing of the tenant's by itself.
  const services = context.schemas.entries.map((e) => e.name);
  return inDatabase(context, sourceDatabase(context), "admin", (admin) => readSchemaVersions(admin, services, sourcePrefix(context.move)));
}

/** The physical schemas of the services that have one at the source. */
async function sourceSchemas(context: MoveContext): Promise<string[]> {
  return physical((await sourceVersions(context)).keys(), sourcePrefix(context.move));
}

/** Gives the tenant's role to the target (as provisioning does), remembering first whether it was there, so that a rollback drops only what the move made. */
async function createRole(context: MoveContext): Promise<void> {
  const { em, move, clusters, tenant } = context;
  if (move.targetRoleExisted == null) {
    const { rowCount } = await clusters.admin(move.targetCluster, (admin) => admin.query("select 1 from pg_roles where rolname = $1", [tenant.role]));
    await changeMove(em, move, { targetRoleExisted: rowCount !== 0 });
  }
  if (pooledTarget(move)) {
    // Into a pool database: a NOLOGIN role taken on through the pool's login. One there already (the source's, on its server) keeps its login until the source is shut out.
    await clusters.admin(move.targetCluster, async (admin) => {
      if (!move.targetRoleExisted) {
        const { rowCount } = await admin.query("select 1 from pg_roles where rolname = $1", [tenant.role]);
        if (rowCount === 0) {
          await admin.query(`create role ${pg.escapeIdentifier(tenant.role!)} nologin`);
        }
      }
      await grantToPool(admin, tenant.role!, move.targetDatabase);
    });
    return;
  }
  await provisioningStep(provisioningStepTable["create-role"].perform)(context);
}

/** Makes the target: a database of the tenant's own, or its schemas in a pool database. */
async function createDatabase(context: MoveContext): Promise<void> {
  const { move, clusters, schemas, tenant } = context;
  if (pooledTarget(move)) {
    const target = { cluster: move.targetCluster, database: move.targetDatabase, role: tenant.role, schemaPrefix: move.targetSchemaPrefix };
    await ensurePooledSchemas(clusters, target, schemas.entries.map((e) => e.name));
    return;
  }
  await provisioningStep(provisioningStepTable["create-database"].perform)(context);
}

/**
 * Has each service migrate the target to the source's versions, then
 * empties its tables (migrations may have written rows: the source's come
 * instead). Online, both databases get the marker table.
 */
async function migrateSchemas(context: MoveContext): Promise<void> {
  const { move, tenant } = context;
  const versions = await sourceVersions(context);
  const pooled = pooledTarget(move);
  const target = pooled ? { ...targetDatabase(context), login: await poolLogin(context), sessionRole: tenant.role! } : targetDatabase(context);
  await migrateDatabase(context, target, versions, "the move's target database");
  // A pool database's tables are emptied by the admin: the pool's login acts only through SET ROLE.
  await inDatabase(context, targetDatabase(context), pooled ? "admin" : "owner", async (client) => {
    const tables = await movedTables(client, physical(versions.keys(), move.targetSchemaPrefix));
    if (tables.length > 0) {
      await client.query(`truncate ${tables.map(quoted).join(", ")}`);
    }
  });
  if (move.mode === moveModes.online) {
    await inDatabase(context, sourceDatabase(context), "admin", (admin) => createMarkerTable(admin, tenant.role!, markerOf(move)));
    await inDatabase(context, targetDatabase(context), "admin", (admin) => createMarkerTable(admin, tenant.role!, markerOf(move)));
  }
}

/** Publishes the services' tables (and the marker table) from the source. */
async function publishSource(context: MoveContext): Promise<void> {
  const schemas = await sourceSchemas(context);
  await inDatabase(context, sourceDatabase(context), "admin", async (admin) => {
    await publish(admin, replicationName(context.move.id), [...(await movedTables(admin, schemas)), markerOf(context.move)]);
  });
}

/**
 * The initial copy: makes the replication slot the target will subscribe
 * through, exporting the snapshot it starts from, and copies every
 * published table in that snapshot into the target at the move's pace
 * (see {@link copyInSnapshot}); the replication connection holding the
 * snapshot stays open, idle, until the copy ends. The snapshot dies with
 * it, so a copy that did not end (Platform stopped, or killed) starts
 * again from nothing: what it left is removed first (the slot; the rows
 * it loaded went with its transaction on the target). A Platform that
 * stops cuts the copy under way.
 */
async function copyTables(context: MoveContext): Promise<void> {
  const { em, move, clusters, copyBytesPerSecond } = context;
  const name = replicationName(move.id);
  // A subscription is what a Platform made before copies were paced: it would copy the tables too.
  await inDatabase(context, targetDatabase(context), "admin", (target) => dropSubscription(target, name));
  const serverVersion = await clusters.admin(move.sourceCluster, async (admin) => {
    await dropSlot(admin, name);
    const { rows } = await admin.query<{ version: number }>("select current_setting('server_version_num')::int as version");
    return rows[0]!.version;
  });
  const schemas = await sourceSchemas(context);
  const replication = await clusters.replicationConnection(move.sourceCluster, move.sourceDatabase);
  try {
    const { snapshot } = await createSlotWithSnapshot(replication, name, serverVersion);
    await inDatabase(context, sourceDatabase(context), "admin", (source) =>
      asTargetOwner(context, async (target) => {
        // Into a pool database the tenant's role may not use `public`, where the move's marker table is: that table is empty until the catch-up, and replication (as the admin) fills it.
        const tables = await publishedTables(source, schemas, pooledTarget(move) ? undefined : markerOf(move));
        const progress = async (tablesCopied: number) => {
          Object.assign(move, { tablesCopied, tableCount: tables.length });
          await recordMoveProgress(em, move.id, { tablesCopied, tableCount: tables.length });
          if (tablesCopied === 1) {
            await context.reached("copy-tables:copying");
          }
        };
        await progress(0);
        const figures = await copyInSnapshot({ source, target, snapshot, tables, schemas, bytesPerSecond: copyBytesPerSecond, copied: progress, signal: context.signal });
        if (tables.length > 0) {
          await target.query(`analyze ${tables.map(quoted).join(", ")}`);
        }
        context.log.info({ moveId: move.id, tenantId: move.tenantId, ...figures, copyMs: Math.round(figures.copyMs), rebuildMs: Math.round(figures.rebuildMs) }, "move's tables copied");
      }),
    );
  } finally {
    await replication.end().catch(() => undefined);
  }
}

/** The tables a move's publication holds, with their columns: the services' (see {@link movedTables}) and the marker table, when given. */
async function publishedTables(source: pg.ClientBase, schemas: string[], markerTable: MarkerTable | undefined): Promise<CatalogTable[]> {
  const services = (await listTables(source, schemas)).filter((t) => t.name !== migrationTable);
  if (markerTable === undefined) {
    return services;
  }
  const marker = (await listTables(source, [markerTable.schema])).filter((t) => t.name === markerTable.name);
  return [...services, ...marker];
}

/**
 * Subscribes the target to the source's publication through the slot the
 * initial copy made: it streams what was committed after the copy's
 * snapshot. FAILED_PRECONDITION when that slot is gone (dropped by hand):
 * the copy cannot be joined with what came after it.
 */
async function subscribeTarget(context: MoveContext): Promise<void> {
  const { move, clusters } = context;
  const name = replicationName(move.id);
  const source = await clusters.access(move.sourceCluster);
  await inDatabase(context, targetDatabase(context), "admin", async (admin) => {
    const { rowCount } = await admin.query("select 1 from pg_subscription where subname = $1", [name]);
    if (rowCount === 0) {
      const slot = await clusters.admin(move.sourceCluster, (sourceAdmin) => sourceAdmin.query("select 1 from pg_replication_slots where slot_name = $1", [name]));
      if (slot.rowCount === 0) {
        throw new ConnectError(`replication slot "${name}" of the move's copy is gone from cluster "${move.sourceCluster}"; move the tenant again`, Code.FailedPrecondition);
      }
    }
    await subscribe(admin, name, { host: source.host, port: source.port, database: move.sourceDatabase, user: source.adminUser, password: source.adminPassword });
  });
}

/**
 * Polls the subscription on `target` until `done` says so, recording the
 * copy's progress. FAILED_PRECONDITION when the target's replication
 * workers keep failing with no progress for `stallMs`; UNAVAILABLE past
 * `timeoutMs`, when given, or when Platform stops.
 */
async function untilReplicated(
  context: MoveContext,
  target: pg.ClientBase,
  done: (progress: SubscriptionProgress) => Promise<boolean>,
  options: { timeoutMs?: number; pollMs?: number } = {},
): Promise<void> {
  const { em, move, stallMs, signal } = context;
  const { timeoutMs, pollMs = context.pollMs } = options;
  const name = replicationName(move.id);
  const started = Date.now();
  let last = await subscriptionProgress(target, name);
  let lastProgressAt = started;
  const firstErrors = last.errors;
  for (;;) {
    const progress = await subscriptionProgress(target, name);
    if (progress.ready !== last.ready || progress.total !== last.total || progress.errors === firstErrors) {
      lastProgressAt = Date.now();
    }
    if (progress.ready !== move.tablesCopied || progress.total !== move.tableCount) {
      Object.assign(move, { tablesCopied: progress.ready, tableCount: progress.total });
      await recordMoveProgress(em, move.id, { tablesCopied: progress.ready, tableCount: progress.total });
    }
    last = progress;
    if (await done(progress)) {
      return;
    }
    if (progress.errors > firstErrors && Date.now() - lastProgressAt > stallMs) {
      throw new ConnectError(
        `replication into cluster "${move.targetCluster}" keeps failing (${progress.errors - firstErrors} errors, no progress for ${stallMs} ms); its server log says why`,
        Code.FailedPrecondition,
      );
    }
    if (timeoutMs !== undefined && Date.now() - started > timeoutMs) {
      throw new ConnectError(`the target did not catch up with the source within ${timeoutMs} ms`, Code.Unavailable);
    }
    if (signal.aborted) {
      throw new ConnectError("Platform is stopping; the move goes on when it starts again", Code.Unavailable);
    }
    await sleep(pollMs, undefined, { signal }).catch(() => undefined);
  }
}

/** Waits until the subscription has every table in step (at once after a paced copy: it copies none). */
async function initialCopy(context: MoveContext): Promise<void> {
  await inDatabase(context, targetDatabase(context), "admin", (target) => untilReplicated(context, target, async (p) => p.total > 0 && p.ready === p.total));
}

/** Writes a marker row on the source and waits until it is on the target: the target has applied everything committed before it. */
async function awaitMarker(context: MoveContext, source: pg.ClientBase, target: pg.ClientBase, options: { timeoutMs?: number; pollMs?: number } = {}): Promise<void> {
  const table = markerOf(context.move);
  const token = await writeMarker(source, table);
  await untilReplicated(context, target, () => markerArrived(target, token, table), options);
}

/** Waits until the target has caught up with the source (a marker row arrived): the cutover's wait will be short. */
async function catchUp(context: MoveContext): Promise<void> {
  await inDatabase(context, sourceDatabase(context), "admin", (source) =>
    inDatabase(context, targetDatabase(context), "admin", (target) => awaitMarker(context, source, target)),
  );
}

/** Refuses a target whose services' schemas are not at the source's versions (a migration ran on one side during the move). */
function checkSameVersions(source: Map<string, string>, target: Map<string, string>): void {
  for (const [service, version] of source) {
    if (target.get(service) !== version) {
      throw new ConnectError(
        `${service}'s schema is at ${version || "no migration"} on the source but ${target.get(service) ?? "missing"} on the target: a migration ran during the move; move the tenant again`,
        Code.FailedPrecondition,
      );
    }
  }
}

/** Refuses to go on when the tenant is no longer served from the move's source (an undone restore switched it meanwhile). */
export async function checkStillAtSource({ em, move }: MoveContext): Promise<void> {
  const tenant = await getTenant(em.fork(), move.tenantId);
  if (tenant.cluster !== move.sourceCluster || tenant.database !== move.sourceDatabase) {
    throw new ConnectError(
      `tenant "${move.tenantId}" is now served from database "${tenant.database}" of cluster "${tenant.cluster}", not the one the move copies ("${move.sourceDatabase}" of "${move.sourceCluster}"); move it again`,
      Code.FailedPrecondition,
    );
  }
}

/** Gives every sequence of the services' schemas on the target (in `targetSchemaOf` a source's schema) the source's value (logical replication does not carry them). */
async function copySequences(source: pg.ClientBase, target: pg.ClientBase, schemas: string[], targetSchemaOf: (schema: string) => string = (schema) => schema): Promise<void> {
  for (const sequence of await listSequences(source, schemas)) {
    const { rows } = await source.query<{ last_value: string; is_called: boolean }>(`select last_value::text, is_called from ${quoted(sequence)}`);
    await target.query("select setval($1::regclass, $2::bigint, $3)", [quoted({ ...sequence, schema: targetSchemaOf(sequence.schema) }), rows[0]!.last_value, rows[0]!.is_called]);
  }
}

/**
 * Takes the login from the tenant's role on the source cluster and ends its
 * sessions there: services can no longer reach the source. Out of a pool
 * database, whose login and sessions the tenant's neighbours share, the
 * pool's login loses the tenant's role instead (a lease's SET ROLE then
 * fails: UNAVAILABLE, and the mesh retries after the switch) and only the
 * sessions last leased to the tenant are ended (see {@link endTenantLeases}).
 */
async function shutSourceOut(context: MoveContext): Promise<void> {
  const { clusters, move, tenant } = context;
  if (pooledSource(move)) {
    await clusters.admin(move.sourceCluster, async (admin) => {
      await admin.query(`revoke ${pg.escapeIdentifier(tenant.role!)} from ${pg.escapeIdentifier(move.sourceDatabase)}`);
      await endTenantLeases(admin, move.sourceDatabase, tenant.id);
    });
    return;
  }
  await clusters.admin(move.sourceCluster, async (admin) => {
    await admin.query(`alter role ${pg.escapeIdentifier(tenant.role!)} nologin`);
    const { rows } = await admin.query<{ now: Date }>("select clock_timestamp() as now");
    await endRoleSessions(admin, tenant.role!, rows[0]!.now);
  });
}

/** Gives the login back to the tenant's role on the source cluster (a rollback; out of a pool database, the role back to the pool's login), and ends any freeze of it the move left. */
async function letSourceIn(context: MoveContext): Promise<void> {
  const { clusters, move, tenant, freeze, fence } = context;
  if (pooledSource(move)) {
    await clusters.admin(move.sourceCluster, (admin) => grantToPool(admin, tenant.role!, move.sourceDatabase));
  } else {
    await clusters.admin(move.sourceCluster, (admin) => admin.query(`alter role ${pg.escapeIdentifier(tenant.role!)} login`));
  }
  await fence.thaw(frozenSource(context), freezeHolder(move));
  await freeze.thaw(frozenSource(context), freezeHolder(move));
}

/** Who a move's freezes are held by, as the freezes list it. */
function freezeHolder(move: Move): string {
  return `platform: move ${move.id}`;
}

function frozenSource({ move, tenant }: MoveContext): FrozenTenant {
  return { tenantId: tenant.id, cluster: move.sourceCluster, database: move.sourceDatabase, role: tenant.role! };
}

/**
 * Copies the tenant under the freeze, as a backup (kept, labelled "move
 * <id>"), and loads it into the target under the target's schema prefix
 * (a tenant promoted out of a pool keeps its prefix in a database of its
 * own; the backup names schemas by service): the load checks every
 * table's rows and SHA-256 against the snapshot and sets the sequences.
 */
async function copyUnderFreeze(context: MoveContext): Promise<void> {
  const { em, move, backups } = context;
  if (pooledTarget(move)) {
    await copyIntoPool(context);
    return;
  }
  const backup = await backups.create(move.tenantId, `move ${move.id}`);
  await changeMove(em, move, { backupId: backup.id, tableCount: backup.tableCount, tablesCopied: 0 });
  const { manifest, dataKey } = await backups.open(backup);
  await migrateDatabase(context, targetDatabase(context), new Map(Object.entries(manifest.services).flatMap(([service, { migrations }]) => (migrations.length > 0 ? [[service, migrations.at(-1)!]] : []))), "the move's target database");
  await inDatabase(context, targetDatabase(context), "owner", (client) =>
    loadBackup({ client, key: keyOf(backup), manifest, dataKey, storage: backups.storage, readBack: false, names: new SchemaNames(move.targetSchemaPrefix) }),
  );
  await changeMove(em, move, { tablesCopied: backup.tableCount });
}

/**
 * Copies the tenant, its writes frozen and its source read-only, into its
 * schemas of a pool database (each source schema's tables into the
 * target's of the same service), as the tenant's role there, with the
 * sequences, straight from the source as an online move's initial copy
 * copies them (unpaced: the tenant's writes wait), with no backup between.
 */
async function copyIntoPool(context: MoveContext): Promise<void> {
  const { em, move } = context;
  const versions = await sourceVersions(context);
  const schemas = physical(versions.keys(), sourcePrefix(move));
  const targetSchemas = physical(versions.keys(), move.targetSchemaPrefix);
  const mapped = targetSchemaOf(move);
  await inDatabase(context, sourceDatabase(context), "owner", async (source) => {
    const target = await connectTarget(context);
    try {
      const tables = (await listTables(source, schemas)).filter((t) => t.name !== migrationTable);
      await changeMove(em, move, { tableCount: tables.length, tablesCopied: 0 });
      const progress = (tablesCopied: number) => recordMoveProgress(em, move.id, { tablesCopied, tableCount: tables.length });
      const figures = await copyInSnapshot({ source, target, tables, schemas: targetSchemas, targetSchemaOf: mapped, bytesPerSecond: 0, copied: progress, signal: context.signal });
      if (tables.length > 0) {
        await target.query(`analyze ${tables.map((t) => quoted({ ...t, schema: mapped(t.schema) })).join(", ")}`);
      }
      await copySequences(source, target, schemas, mapped);
      Object.assign(move, { tablesCopied: tables.length });
      context.log.info({ moveId: move.id, tenantId: move.tenantId, ...figures, copyMs: Math.round(figures.copyMs), rebuildMs: Math.round(figures.rebuildMs) }, "move's tables copied into its pool database");
    } finally {
      await target.end().catch(() => undefined);
    }
  });
}

/**
 * Freezes the tenant's writes for the cutover, trying again when a service
 * instance did not acknowledge in time (nothing has changed then).
 */
async function freezeSource(context: MoveContext, ttlMs: number): Promise<Release> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await context.freeze.freeze(frozenSource(context), { holder: freezeHolder(context.move), ttlMs });
    } catch (error) {
      if (ConnectError.from(error).code !== Code.Unavailable || attempt >= freezeAttempts || context.signal.aborted) {
        throw error;
      }
      context.log.warn({ moveId: context.move.id, reason: ConnectError.from(error).rawMessage, attempt }, "could not freeze the tenant's writes for the cutover; trying again");
      await sleep(1000, undefined, { signal: context.signal }).catch(() => undefined);
    }
  }
}

/**
 * The cutover: freezes the tenant's writes (every service holds them;
 * under freeze the source database refuses them too, for the whole copy);
 * online, waits for a marker row, under freeze, copies; checks that both
 * sides have the same schema versions and rows (and digests when asked);
 * shuts the tenant out of the source (online, then waits for a last marker
 * and sets the sequences: whatever an instance that missed the freeze
 * wrote before it was shut out is on the target); and switches its route
 * to the target, recorded with this step in one transaction. Services
 * follow the route through the change feed before their held writes go
 * on. The writes are thawed whatever happens.
 */
async function cutover(context: MoveContext): Promise<void> {
  if (context.move.mode === moveModes.online) {
    // Connected before the freeze, which need not wait for that: the admin's sessions are neither frozen nor shut out.
    await inDatabase(context, sourceDatabase(context), "admin", (source) =>
      inDatabase(context, targetDatabase(context), "admin", (target) => frozenCutover(context, () => Promise.resolve({ source, target }))),
    );
    return;
  }
  // Under freeze the tenant's role reads both sides once the copy is made: its sessions before the freeze are ended by it.
  const opened: pg.Client[] = [];
  try {
    await frozenCutover(context, async () => {
      const source = await context.clusters.connect(context.move.sourceCluster, context.move.sourceDatabase, sourceDatabase(context).login);
      opened.push(source);
      const target = await connectTarget(context);
      opened.push(target);
      return { source, target };
    });
  } finally {
    await Promise.all(opened.map((client) => client.end().catch(() => undefined)));
  }
}

/** The cutover under its freeze, on connections to both sides that `connect` gives once the copy (under freeze) is made. */
async function frozenCutover(context: MoveContext, connect: () => Promise<{ source: pg.Client; target: pg.Client }>): Promise<void> {
  const { em, move, fence, schemas, cutoverTimeoutMs, log } = context;
  const online = move.mode === moveModes.online;
  const releases: Release[] = [];
  try {
    releases.push(await freezeSource(context, online ? cutoverTimeoutMs + 60_000 : maxFreezeTtlMs));
    if (!online) {
      releases.push(await fence.freeze(frozenSource(context), { holder: freezeHolder(move), ttlMs: maxFreezeTtlMs }));
    }
    const frozenAt = Date.now();
    await context.reached("cutover:frozen");
    await checkStillAtSource(context);
    if (!online) {
      await copyUnderFreeze(context);
    }
    const { source, target } = await connect();
    const marker = { timeoutMs: cutoverTimeoutMs, pollMs: cutoverPollMs };
    if (online) {
      await awaitMarker(context, source, target, marker);
    }
    const services = schemas.entries.map((e) => e.name);
    const versions = await readSchemaVersions(source, services, sourcePrefix(move));
    checkSameVersions(versions, await readSchemaVersions(target, services, move.targetSchemaPrefix));
    const schemaNames = physical(versions.keys(), sourcePrefix(move));
    await compareTables(source, target, await movedTables(source, schemaNames), { digests: move.compareDigests, targetSchemaOf: targetSchemaOf(move) });
    await shutSourceOut(context);
    if (online) {
      // What an instance that missed the freeze wrote before it was shut out is on the target once this marker is.
      await awaitMarker(context, source, target, marker);
      await copySequences(source, target, schemaNames);
    }
    const switchedAt = new Date();
    await recordSwitch(em, move, { step: pointOfNoReturn, switchedAt, freezeMs: switchedAt.getTime() - frozenAt });
    log.info({ moveId: move.id, tenantId: move.tenantId, cluster: move.targetCluster, freezeMs: move.freezeMs }, "tenant switched to its new cluster");
  } finally {
    for (const release of releases.reverse()) {
      await release().catch((error: unknown) => log.error({ err: error, moveId: move.id, tenantId: move.tenantId }, "could not thaw the tenant's writes after the cutover"));
    }
  }
}

/**
 * Removes the subscription, the replication slot, the publication and the
 * marker tables, wherever they are. Each is tried even when another fails
 * (the slot above all, which keeps the source's WAL while it lasts); then
 * the first failure is thrown, and the step is tried again later.
 */
async function removeReplication(context: MoveContext): Promise<void> {
  const { move, clusters } = context;
  const name = replicationName(move.id);
  const failures: unknown[] = [];
  const attempt = (work: () => Promise<void>) => work().catch((error: unknown) => void failures.push(error));
  await attempt(() =>
    inExistingDatabase(context, targetDatabase(context), async (target) => {
      await dropSubscription(target, name);
      await dropMarkerTable(target, markerOf(move));
    }),
  );
  await attempt(() => clusters.admin(move.sourceCluster, (admin) => dropSlot(admin, name)));
  await attempt(() =>
    inExistingDatabase(context, sourceDatabase(context), async (source) => {
      await dropPublication(source, name);
      await dropMarkerTable(source, markerOf(move));
    }),
  );
  if (failures.length > 0) {
    throw failures[0];
  }
}

/** What each step does. */
export const moveStepTable: { readonly [S in MoveStep]: MoveWork } = {
  "create-role": createRole,
  "create-database": createDatabase,
  // A pool database is secured once, when made; the tenant's schemas are its role's.
  "secure-database": (context) => (pooledTarget(context.move) ? Promise.resolve() : provisioningStep(provisioningStepTable["secure-database"].perform)(context)),
  "migrate-schemas": migrateSchemas,
  publish: publishSource,
  "copy-tables": copyTables,
  subscribe: subscribeTarget,
  "initial-copy": initialCopy,
  "catch-up": (context) => catchUp(context),
  cutover,
  "remove-replication": removeReplication,
  "close-source": closeSource,
};

/**
 * What undoes a move that failed before its cutover, in order: what
 * replication made, the source's freeze and shut-out, the target database,
 * and the tenant's role on the target unless it was there before. Each is
 * harmless where its step was never done.
 */
export const moveRollback: MoveWork[] = [
  removeReplication,
  letSourceIn,
  async (context) => {
    const { move, clusters, tenant } = context;
    if (pooledTarget(move)) {
      await dropPooledSchemas(clusters, { cluster: move.targetCluster, database: move.targetDatabase, role: tenant.role, schemaPrefix: move.targetSchemaPrefix });
      return;
    }
    await provisioningStep(rollbackStepTable["drop-database"])(context);
  },
  async (context) => {
    if (pooledTarget(context.move) && context.move.targetRoleExisted === true) {
      // The role the source logs in with (on its server): it only loses the pool's login again.
      await context.clusters.admin(context.move.targetCluster, (admin) =>
        admin.query(`revoke ${pg.escapeIdentifier(context.tenant.role!)} from ${pg.escapeIdentifier(context.move.targetDatabase)}`).then(() => undefined),
      );
    } else if (context.move.targetRoleExisted === false) {
      await provisioningStep(rollbackStepTable["drop-role"])(context);
    } else if (promotes(context.move) && context.move.targetRoleExisted === true) {
      // The pooled tenant's own role, given a login for its new database: it logs in no more.
      await context.clusters.admin(context.move.targetCluster, (admin) => admin.query(`alter role ${pg.escapeIdentifier(context.tenant.role!)} nologin password null`));
    }
  },
];

/**
 * Closes the source to the tenant: a database of its own is closed to
 * connections (and dropped after the keep time); out of a pool database,
 * whose other tenants go on, the tenant's schemas there are dropped at
 * once, and its role too when it stays behind on another cluster.
 */
async function closeSource(context: MoveContext): Promise<void> {
  const { clusters, move, tenant, em } = context;
  if (!pooledSource(move)) {
    await allowConnections(clusters, move.sourceCluster, move.sourceDatabase, false);
    return;
  }
  const source = { cluster: move.sourceCluster, database: move.sourceDatabase, role: tenant.role, schemaPrefix: sourcePrefix(move) };
  // Every generation goes, those in-place restores keep for an undo too.
  await dropPooledSchemas(clusters, source);
  await forgetKeptGenerations(em, { tenantId: tenant.id, cluster: move.sourceCluster, database: move.sourceDatabase });
  if (move.sourceCluster !== move.targetCluster && (await clusters.serverIdentity(move.sourceCluster)) !== (await clusters.serverIdentity(move.targetCluster))) {
    await clusters.dropRole(move.sourceCluster, tenant.role!).catch((error: { code?: string }) => {
      // 2BP01: it still owns a database an earlier move keeps there; dropped with that database.
      if (error.code !== "2BP01") {
        throw error;
      }
    });
  }
  await changeMove(em, move, { sourceDropped: true });
}

/** Grants a pooled tenant's role to its pool database's login, to be taken on with SET ROLE only (as provisioning grants it). */
async function grantToPool(admin: pg.ClientBase, role: string, poolRole: string): Promise<void> {
  const { rows } = await admin.query<{ version: number }>("select current_setting('server_version_num')::int as version");
  const options = rows[0]!.version >= 160000 ? " with inherit false, set true" : "";
  await admin.query(`grant ${pg.escapeIdentifier(role)} to ${pg.escapeIdentifier(poolRole)}${options}`);
}

/** How often a pooled tenant's leases are looked for again while they end. */
const leasePollMs = 5;

/**
 * Ends the sessions of a pool database last leased to a tenant (the
 * mesh's leases name the tenant at the end of their application_name,
 * `<service>@<tenant id>`), and resolves once none is found twice in a
 * row: a session that took on the tenant's role keeps it after the role is
 * revoked from the pool's login, so each must end. Sessions of the
 * tenant's neighbours carry their own names and are left alone.
 */
async function endTenantLeases(admin: pg.ClientBase, database: string, tenantId: string): Promise<void> {
  const suffix = `@${tenantId}`;
  for (let quiet = 0; quiet < 2; ) {
    const { rowCount } = await admin.query(
      "select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and right(application_name, $3) = $2 and pid <> pg_backend_pid() and backend_type = 'client backend'",
      [database, suffix, suffix.length],
    );
    quiet = rowCount === 0 ? quiet + 1 : 0;
    await sleep(leasePollMs);
  }
}
