import { Code, ConnectError } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import pg from "pg";
import { quoted } from "../backups/index.ts";

/** What names every publication, subscription and replication slot a move makes, followed by the move's id. */
export const replicationPrefix = "tenantry_move_";

/** The name of a move's publication, subscription and replication slot: found again by it after a crash. */
export function replicationName(moveId: string): string {
  return `${replicationPrefix}${moveId.replaceAll("-", "")}`;
}

/** The id of the move that made the publication, subscription or slot named `name`; undefined for another's. */
export function moveIdOf(name: string): string | undefined {
  const hex = /^tenantry_move_([0-9a-f]{32})$/.exec(name)?.[1];
  return hex === undefined ? undefined : `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** A table of a tenant database, by schema and name. */
export interface MarkerTable {
  schema: string;
  name: string;
}

/**
 * The table a move writes marker rows to on the source and waits for on
 * the target: once one has arrived, every change committed on the source
 * before it has been applied. Published with the services' tables.
 */
export const markerTable: MarkerTable = { schema: "public", name: "tenantry_move_marker" };

/**
 * The marker table of a move out of a pool database: one per move, since
 * moves of several tenants out of one pool database run at once, each
 * with its own publication and its own marker rows.
 */
export function moveMarkerTable(moveId: string): MarkerTable {
  return { schema: "public", name: `tenantry_move_marker_${moveId.replaceAll("-", "")}` };
}

/** Makes the marker table `table` in a tenant database (as the admin), owned by the tenant's role. */
export async function createMarkerTable(client: pg.ClientBase, owner: string, table: MarkerTable = markerTable): Promise<void> {
  await client.query(`create table if not exists ${quoted(table)} (token uuid primary key, written_at timestamptz not null default now())`);
  await client.query(`alter table ${quoted(table)} owner to ${pg.escapeIdentifier(owner)}`);
}

/** Drops the marker table `table` of a tenant database, if there. */
export async function dropMarkerTable(client: pg.ClientBase, table: MarkerTable = markerTable): Promise<void> {
  await client.query(`drop table if exists ${quoted(table)}`);
}

/**
 * Writes a marker row on the source; returns its token. Its commit waits
 * for the WAL to be flushed, whatever the server's synchronous_commit: WAL
 * senders send only what is flushed, which asynchronous commits leave to
 * the WAL writer (up to wal_writer_delay later).
 */
export async function writeMarker(source: pg.ClientBase, table: MarkerTable = markerTable): Promise<string> {
  const token = randomUUID();
  await source.query("begin");
  try {
    await source.query("set local synchronous_commit = on");
    await source.query(`insert into ${quoted(table)} (token) values ($1)`, [token]);
    await source.query("commit");
  } catch (error) {
    await source.query("rollback").catch(() => undefined);
    throw error;
  }
  return token;
}

/** Whether the marker row of `token` has arrived on the target. */
export async function markerArrived(target: pg.ClientBase, token: string, table: MarkerTable = markerTable): Promise<boolean> {
  const { rowCount } = await target.query(`select 1 from ${quoted(table)} where token = $1`, [token]);
  return rowCount !== 0;
}

/** Publishes `tables` from the source database as `name` (on a connection to it as the admin), unless published already. */
export async function publish(source: pg.ClientBase, name: string, tables: { schema: string; name: string }[]): Promise<void> {
  const { rowCount } = await source.query("select 1 from pg_publication where pubname = $1", [name]);
  if (rowCount === 0) {
    await source.query(`create publication ${pg.escapeIdentifier(name)} for table ${tables.map(quoted).join(", ")}`);
  }
}

/** Drops the publication of the source database named `name`, if there. */
export async function dropPublication(source: pg.ClientBase, name: string): Promise<void> {
  await source.query(`drop publication if exists ${pg.escapeIdentifier(name)}`);
}

/** How the target server reaches the source database, as the source's admin (who may replicate). */
export interface PublisherAccess {
  host: string;
  port: number;
  database: string;
  user: string;
  password: string;
}

/** A libpq connection string of `access`, every value quoted. */
export function connectionString(access: PublisherAccess): string {
  const value = (v: string | number) => `'${String(v).replaceAll("\\", "\\\\").replaceAll("'", "\\'")}'`;
  return [
    `host=${value(access.host)}`,
    `port=${value(access.port)}`,
    `dbname=${value(access.database)}`,
    `user=${value(access.user)}`,
    `password=${value(access.password)}`,
    `application_name=${value("tenantry-move")}`,
  ].join(" ");
}

/**
 * Subscribes the target database (on a connection to it as the admin) to
 * the publication `name` of the source, through the replication slot of
 * that name made by {@link createSlotWithSnapshot}: the tables were copied
 * in the slot's snapshot, so the subscription copies nothing and applies
 * what was committed after it. Nothing happens when the subscription
 * exists already.
 */
export async function subscribe(target: pg.ClientBase, name: string, source: PublisherAccess): Promise<void> {
  const { rowCount } = await target.query("select 1 from pg_subscription where subname = $1", [name]);
  if (rowCount === 0) {
    await target.query(
      `create subscription ${pg.escapeIdentifier(name)} connection ${pg.escapeLiteral(connectionString(source))} publication ${pg.escapeIdentifier(name)} ` +
        `with (slot_name = ${pg.escapeLiteral(name)}, copy_data = false, create_slot = false)`,
    );
  }
}

/**
 * Makes the logical replication slot `name` (pgoutput) on a replication
 * connection to the source database (see `ClusterRegistry.replicationConnection`),
 * exporting the snapshot it starts from: tables read in that snapshot and
 * the changes the slot streams join without a gap or an overlap. The
 * snapshot lasts while the connection stays open and takes no other
 * command. `serverVersion` is the source's server_version_num (the
 * command's options are written another way before PostgreSQL 15).
 */
export async function createSlotWithSnapshot(replication: pg.Client, name: string, serverVersion: number): Promise<{ snapshot: string; lsn: string }> {
  // Replication commands take their keywords in capitals only.
  const options = serverVersion >= 150000 ? "(SNAPSHOT 'export')" : "EXPORT_SNAPSHOT";
  const { rows } = await replication.query<{ snapshot_name: string; consistent_point: string }>(`CREATE_REPLICATION_SLOT ${pg.escapeIdentifier(name)} LOGICAL pgoutput ${options}`);
  return { snapshot: rows[0]!.snapshot_name, lsn: rows[0]!.consistent_point };
}

/** How far a subscription has come: tables copied and in step, of all, and the errors its workers met. */
export interface SubscriptionProgress {
  ready: number;
  total: number;
  errors: number;
}

/** The progress of the subscription `name` of the target database; NOT_FOUND when it does not exist. */
export async function subscriptionProgress(target: pg.ClientBase, name: string): Promise<SubscriptionProgress> {
  const { rows } = await target.query<{ ready: number; total: number; errors: string | null; found: boolean }>(
    `select (select count(*)::int from pg_subscription_rel r where r.srsubid = s.oid and r.srsubstate in ('r', 's')) as ready,
            (select count(*)::int from pg_subscription_rel r where r.srsubid = s.oid) as total,
            (select apply_error_count + sync_error_count from pg_stat_subscription_stats t where t.subid = s.oid) as errors
     from pg_subscription s where s.subname = $1`,
    [name],
  );
  const row = rows[0];
  if (row === undefined) {
    throw new ConnectError(`subscription "${name}" is missing from the target database`, Code.NotFound);
  }
  return { ready: row.ready, total: row.total, errors: Number(row.errors ?? 0) };
}

/**
 * Drops the subscription `name` of the database `target` is connected to
 * (as the admin), if there, leaving its replication slot on the source
 * (see {@link dropSlot}): dropping that too would need the source reachable.
 */
export async function dropSubscription(target: pg.ClientBase, name: string): Promise<void> {
  const { rowCount } = await target.query("select 1 from pg_subscription where subname = $1 and subdbid = (select oid from pg_database where datname = current_database())", [name]);
  if (rowCount === 0) {
    return;
  }
  const subscription = pg.escapeIdentifier(name);
  await target.query(`alter subscription ${subscription} disable`);
  await target.query(`alter subscription ${subscription} set (slot_name = none)`);
  await target.query(`drop subscription ${subscription}`);
}

/** Drops the replication slot `name` of a server (on an admin connection to it), ending the WAL sender using it; nothing when there is none. */
export async function dropSlot(admin: pg.ClientBase, name: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    const { rows } = await admin.query<{ active_pid: number | null }>("select active_pid from pg_replication_slots where slot_name = $1", [name]);
    if (rows.length === 0) {
      return;
    }
    if (rows[0]!.active_pid !== null) {
      await admin.query("select pg_terminate_backend($1, 5000)", [rows[0]!.active_pid]);
    }
    try {
      await admin.query("select pg_drop_replication_slot($1)", [name]);
      return;
    } catch (error) {
      // 55006: still in use, by a sender that was starting again; 42704: gone meanwhile.
      const code = (error as { code?: string }).code;
      if (code === "42704") {
        return;
      }
      if (code !== "55006" || attempt >= 10) {
        throw error;
      }
    }
  }
}
