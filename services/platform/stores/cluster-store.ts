import type { EntityManager } from "@mikro-orm/postgresql";
import { Cluster } from "../entities/cluster.ts";
import { countTenantsByCluster } from "./tenant-store.ts";

/** How the registry spells a cluster's state: accepting new tenants, or draining (taking none). */
export const clusterStates = { accepting: "accepting", draining: "draining" } as const;

export type ClusterStateName = (typeof clusterStates)[keyof typeof clusterStates];

/** The context a cluster's admin password is sealed for. */
export function adminPasswordContext(name: string): string {
  return `cluster:${name}:admin`;
}

/** The context the password of a cluster's template database role is sealed for. */
export function templatePasswordContext(name: string): string {
  return `cluster:${name}:template`;
}

/** A cluster's record as registered; its admin password sealed for {@link adminPasswordContext}. */
export interface ClusterRecord {
  name: string;
  host: string;
  port: number;
  adminUser: string;
  adminPassword: Cluster["adminPassword"];
  /** How many dedicated tenants it may hold. */
  capacity: number;
  /** How many pooled tenants it may hold. */
  poolCapacity: number;
  region: string;
  state: ClusterStateName;
}

/** A cluster, or null when none is registered by that name. */
export function findCluster(em: EntityManager, name: string): Promise<Cluster | null> {
  return em.findOne(Cluster, { name });
}

/**
 * Every cluster by name, with the number of tenants that take up a place
 * on it: dedicated ones (`tenantCount`, against its capacity) and pooled
 * ones (`pooledCount`, against its pool capacity).
 */
export async function listClusters(em: EntityManager): Promise<{ cluster: Cluster; tenantCount: number; pooledCount: number }[]> {
  const clusters = await em.find(Cluster, {}, { orderBy: { name: "asc" } });
  const counts = await countTenantsByCluster(em);
  return clusters.map((cluster) => ({ cluster, tenantCount: counts.get(cluster.name)?.dedicated ?? 0, pooledCount: counts.get(cluster.name)?.pooled ?? 0 }));
}

/** Registers a cluster, or gives a registered one these settings (its template's record is kept). */
export async function upsertCluster(em: EntityManager, record: ClusterRecord): Promise<void> {
  const now = new Date();
  await em.execute(
    `insert into platform.clusters (name, host, port, admin_user, admin_password, capacity, pool_capacity, region, state, created_at, updated_at)
     values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
     on conflict (name) do update set host = excluded.host, port = excluded.port, admin_user = excluded.admin_user,
       admin_password = excluded.admin_password, capacity = excluded.capacity, pool_capacity = excluded.pool_capacity,
       region = excluded.region, state = excluded.state, updated_at = excluded.updated_at`,
    [record.name, record.host, record.port, record.adminUser, record.adminPassword, record.capacity, record.poolCapacity, record.region, record.state, now, now],
  );
}

/** Records the sealed password of a cluster's template database role (see {@link templatePasswordContext}). */
export async function recordTemplatePassword(em: EntityManager, cluster: Cluster, sealed: NonNullable<Cluster["templatePassword"]>): Promise<void> {
  cluster.templatePassword = sealed;
  await em.flush();
}

/** Records the version of each service's schema in a cluster's template database. */
export async function recordTemplateVersions(em: EntityManager, cluster: Cluster, versions: Record<string, string>): Promise<void> {
  cluster.templateVersions = versions;
  cluster.updatedAt = new Date();
  await em.flush();
}

/** Records a cluster's state; returns whether it was registered. */
export async function changeClusterState(em: EntityManager, name: string, state: ClusterStateName): Promise<boolean> {
  return (await em.nativeUpdate(Cluster, { name }, { state, updatedAt: new Date() })) > 0;
}
