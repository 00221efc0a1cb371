import { Code, ConnectError } from "@connectrpc/connect";
import { clusterStates } from "../stores/index.ts";

/** A cluster as placement weighs it, as the cluster store lists it. */
export interface PlacementCandidate {
  cluster: {
    name: string;
    /** See {@link clusterStates}. */
    state: string;
    region: string;
    /** How many dedicated tenants it may hold. */
    capacity: number;
    /** How many pooled tenants it may hold. */
    poolCapacity: number;
  };
  /** How many dedicated tenants take up a place on it now. */
  tenantCount: number;
  /** How many pooled tenants take up a place on it now. */
  pooledCount: number;
}

/** Where a new tenant is asked to go. */
export interface PlacementRequest {
  /** The cluster asked for; empty lets placement choose. */
  cluster: string;
  /** The region asked for when no cluster is; empty means any. */
  region: string;
  /** Whether the tenant is pooled: its room is then the pool capacity's. */
  pooled?: boolean;
}

/**
 * Chooses a new tenant's cluster among `clusters` (given in name order):
 * the one asked for, else the accepting one (in the region asked for) with
 * the most room, the first by name among equals. A pooled tenant's room is
 * the pool capacity less the pooled tenants, a dedicated one's the
 * capacity less the dedicated tenants: thousands of small pooled tenants
 * never take a dedicated tenant's place. INVALID_ARGUMENT for an
 * unknown cluster, FAILED_PRECONDITION when the one asked for is draining
 * or none accepts, RESOURCE_EXHAUSTED when the chosen one is full.
 */
export function chooseCluster(candidates: readonly PlacementCandidate[], wanted: PlacementRequest): string {
  const room = ({ cluster, tenantCount, pooledCount }: PlacementCandidate) => (wanted.pooled === true ? cluster.poolCapacity - pooledCount : cluster.capacity - tenantCount);
  let chosen: PlacementCandidate | undefined;
  if (wanted.cluster !== "") {
    chosen = candidates.find(({ cluster }) => cluster.name === wanted.cluster);
    if (chosen === undefined) {
      throw new ConnectError(`cluster "${wanted.cluster}" is not registered; see ListClusters`, Code.InvalidArgument);
    }
    if (chosen.cluster.state !== clusterStates.accepting) {
      throw new ConnectError(`cluster "${wanted.cluster}" is ${chosen.cluster.state} and takes no new tenants`, Code.FailedPrecondition);
    }
  } else {
    for (const candidate of candidates) {
      const { state, region } = candidate.cluster;
      if (state === clusterStates.accepting && (wanted.region === "" || region === wanted.region) && (chosen === undefined || room(candidate) > room(chosen))) {
        chosen = candidate;
      }
    }
    if (chosen === undefined) {
      throw new ConnectError(
        `no cluster${wanted.region === "" ? "" : ` in region "${wanted.region}"`} accepts new tenants; register one or set one to accepting`,
        Code.FailedPrecondition,
      );
    }
  }
  if (room(chosen) <= 0) {
    const what = wanted.pooled === true ? "pool capacity (pooled tenants)" : "capacity";
    throw new ConnectError(`cluster "${chosen.cluster.name}" is full; raise its ${what} or register another cluster`, Code.ResourceExhausted);
  }
  return chosen.cluster.name;
}
