import type { EntityManager } from "@mikro-orm/postgresql";
import type { Cluster } from "../entities/cluster.ts";
import { countArrivingMoves } from "../stores/index.ts";

/** A cluster's room for more tenants, by placement. */
export interface ClusterRoom {
  /** Its capacity less its dedicated tenants and the dedicated tenants moving to it. */
  dedicated: number;
  /** Its pool capacity less its pooled tenants and the pooled tenants moving to it. */
  pooled: number;
}

/**
 * The room a cluster has now, as the cluster store lists it with its
 * counts, for tenants of each placement: each placement against its own
 * capacity (a pooled tenant never takes a dedicated tenant's place, nor the
 * other way), moves under way to it counted as arrived. May be negative
 * once a capacity was lowered below what the cluster holds.
 */
export async function clusterRoom(em: EntityManager, listed: { cluster: Cluster; tenantCount: number; pooledCount: number }): Promise<ClusterRoom> {
  const arriving = await countArrivingMoves(em, listed.cluster.name);
  return {
    dedicated: listed.cluster.capacity - listed.tenantCount - arriving.dedicated,
    pooled: listed.cluster.poolCapacity - listed.pooledCount - arriving.pooled,
  };
}
