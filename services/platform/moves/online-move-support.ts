import { ConnectError } from "@connectrpc/connect";
import pg from "pg";
import type { ClusterRegistry } from "../cluster-registry.ts";

/** Whether a cluster can be the source and the target of online moves, and why not. */
export interface OnlineMoveSupport {
  /** Tenants can be moved away from it online. */
  source: boolean;
  /** Tenants can be moved to it online. */
  target: boolean;
  /** Why not, what to change; empty when both hold. */
  note: string;
}

interface ServerFacts {
  wal_level: string;
  max_replication_slots: number;
  slots: number;
  max_wal_senders: number;
  senders: number;
  max_workers: number;
  workers: number;
  superuser: boolean;
  admin: string;
}

/**
 * Asks a cluster whether online moves can take tenants from it (logical
 * decoding, a replication slot and a WAL sender free, a superuser admin
 * that publishes and replicates) and bring tenants to it (a superuser
 * admin that subscribes, a logical replication worker free). A cluster
 * that cannot be reached can be neither; the note says so.
 */
export async function onlineMoveSupport(clusters: ClusterRegistry, name: string): Promise<OnlineMoveSupport> {
  let facts: ServerFacts;
  try {
    facts = await clusters.admin(name, async (admin) => {
      const { rows } = await admin.query<ServerFacts>(
        `select current_setting('wal_level') as wal_level,
                current_setting('max_replication_slots')::int as max_replication_slots,
                (select count(*)::int from pg_replication_slots) as slots,
                current_setting('max_wal_senders')::int as max_wal_senders,
                (select count(*)::int from pg_stat_replication) as senders,
                current_setting('max_logical_replication_workers')::int as max_workers,
                (select count(*)::int from pg_stat_subscription where pid is not null) as workers,
                (select rolsuper from pg_roles where rolname = current_user) as superuser,
                current_user as admin`,
      );
      return rows[0]!;
    });
  } catch (error) {
    return { source: false, target: false, note: `cannot ask the server: ${ConnectError.from(error).rawMessage}` };
  }
  const asSource: string[] = [];
  const asTarget: string[] = [];
  if (!facts.superuser) {
    const reason = `the admin role "${facts.admin}" is not a superuser (online moves publish, replicate and subscribe as it)`;
    asSource.push(reason);
    asTarget.push(reason);
  }
  if (facts.wal_level !== "logical") {
    asSource.push(`wal_level is ${facts.wal_level}, not logical (set wal_level=logical and restart the server)`);
  }
  if (facts.slots >= facts.max_replication_slots) {
    asSource.push(`all ${facts.max_replication_slots} replication slots are in use (raise max_replication_slots)`);
  }
  if (facts.senders >= facts.max_wal_senders) {
    asSource.push(`all ${facts.max_wal_senders} WAL senders are in use (raise max_wal_senders)`);
  }
  if (facts.workers >= facts.max_workers) {
    asTarget.push(`all ${facts.max_workers} logical replication workers are in use (raise max_logical_replication_workers)`);
  }
  const note = [
    ...(asSource.length === 0 ? [] : [`not a source: ${asSource.join("; ")}`]),
    ...(asTarget.length === 0 ? [] : [`not a target: ${asTarget.filter((r) => !asSource.includes(r)).join("; ") || "as above"}`]),
  ].join(". ");
  return { source: asSource.length === 0, target: asTarget.length === 0, note };
}

/** The tables of `schemas` with no primary key nor other replica identity: logical replication could not apply their updates and deletes. */
export async function tablesWithoutReplicaIdentity(client: pg.ClientBase, schemas: string[]): Promise<string[]> {
  const { rows } = await client.query<{ name: string }>(
    `select n.nspname || '.' || c.relname as name from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where c.relkind = 'r' and n.nspname = any($1)
       and (c.relreplident = 'n' or (c.relreplident = 'd' and not exists (select 1 from pg_index i where i.indrelid = c.oid and i.indisprimary)))
     order by 1`,
    [schemas],
  );
  return rows.map((r) => r.name);
}
