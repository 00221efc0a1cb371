import type { EntityManager } from "@mikro-orm/postgresql";

/**
 * A pool database's states: `ready` takes pooled tenants while it has
 * room (counted from its tenants); `draining` (set by an operator, to
 * empty it) takes none.
 */
export const poolStates = { ready: "ready", draining: "draining" } as const;

export type PoolStateName = (typeof poolStates)[keyof typeof poolStates];

/** A pool database of a cluster, with its login role (`platform.pool_databases`). */
export interface PoolDatabaseRecord {
  cluster: string;
  /** The database's name, `tenantry_pool_<n>`. */
  name: string;
  /** Its login role: LOGIN NOINHERIT, member of each of its tenants' roles, acting only through SET ROLE. */
  role: string;
  /** Sealed for {@link poolPasswordContext}. */
  rolePassword: Uint8Array;
  /** See {@link poolStates}. */
  state: string;
}

/** The context a pool database's role password is sealed for. */
export function poolPasswordContext(cluster: string, name: string): string {
  return `pool:${cluster}:${name}:role`;
}

interface PoolRow {
  cluster: string;
  name: string;
  role: string;
  role_password: Uint8Array;
  state: string;
  tenants: string;
}

/**
 * The pool databases of a cluster, by name, each with how many pooled
 * tenants it holds (those being provisioned included; failed and deleted
 * ones, whose schemas are gone, not) and how many are moving into it
 * (moves under way, whose tenants take their place there once switched):
 * its room is what both leave of its capacity.
 */
export async function listPoolDatabases(em: EntityManager, cluster: string): Promise<(PoolDatabaseRecord & { tenantCount: number; arriving: number })[]> {
  const rows = await em.execute<(PoolRow & { arriving: string })[]>(
    `select p.cluster, p.name, p.role, p.role_password, p.state,
       coalesce((select c.tenants from platform.placement_counts c
         where c.cluster = p.cluster and c.placement = 'pooled' and c.database = p.name), 0) as tenants,
       (select count(*) from platform.moves m
         where m.target_cluster = p.cluster and m.target_database = p.name and m.target_placement = 'pooled' and m.state = 'running') as arriving
     from platform.pool_databases p where p.cluster = ? order by p.name`,
    [cluster],
  );
  return rows.map((row) => ({ ...recordOf(row), tenantCount: Number(row.tenants), arriving: Number(row.arriving) }));
}

/** A pool database, or undefined when the cluster has none by that name. */
export async function findPoolDatabase(em: EntityManager, cluster: string, name: string): Promise<PoolDatabaseRecord | undefined> {
  const [row] = await em.execute<PoolRow[]>(
    "select cluster, name, role, role_password, state, 0 as tenants from platform.pool_databases where cluster = ? and name = ?",
    [cluster, name],
  );
  return row === undefined ? undefined : recordOf(row);
}

/** Records a pool database's state; returns whether the cluster has a pool database by that name. */
export async function changePoolDatabaseState(em: EntityManager, cluster: string, name: string, state: PoolStateName): Promise<boolean> {
  const changed = await em.execute<{ name: string }[]>("update platform.pool_databases set state = ? where cluster = ? and name = ? returning name", [state, cluster, name]);
  return changed.length > 0;
}

/** Records a pool database. */
export async function insertPoolDatabase(em: EntityManager, record: PoolDatabaseRecord): Promise<void> {
  await em.execute("insert into platform.pool_databases (cluster, name, role, role_password, state, created_at) values (?, ?, ?, ?, ?, now())", [
    record.cluster,
    record.name,
    record.role,
    Buffer.from(record.rolePassword),
    record.state,
  ]);
}

function recordOf(row: PoolRow): PoolDatabaseRecord {
  return { cluster: row.cluster, name: row.name, role: row.role, rolePassword: row.role_password, state: row.state };
}
