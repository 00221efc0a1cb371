import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import type { MikroORM } from "@mikro-orm/postgresql";
import { Code, ConnectError } from "@connectrpc/connect";
import { ClusterService, ClusterState, PoolDatabaseState } from "../../gen/tenantry/platform/v1/cluster_service_pb.js";
import type { AuditLog } from "./audit-log.ts";
import type { ClusterRegistry } from "./cluster-registry.ts";
import type { Cluster } from "./entities/cluster.ts";
import { onlineMoveSupport, type OnlineMoveSupport } from "./moves/index.ts";
import { listClusterPoolDatabases, setPoolDatabaseState, type PoolDatabaseView } from "./pool-databases.ts";
import { clusterStates, findCluster, listClusters, poolStates } from "./stores/index.ts";

/** The pool capacity of a cluster registered without one. */
const defaultPoolCapacity = 20000;

export { ClusterService };

function clusterMessage(cluster: Cluster, counts: { tenantCount: number; pooledCount: number }, online: OnlineMoveSupport) {
  return {
    name: cluster.name,
    host: cluster.host,
    port: cluster.port,
    adminUser: cluster.adminUser,
    capacity: cluster.capacity,
    region: cluster.region,
    state: cluster.state === clusterStates.draining ? ClusterState.DRAINING : ClusterState.ACCEPTING,
    tenantCount: counts.tenantCount,
    poolCapacity: cluster.poolCapacity,
    pooledTenantCount: counts.pooledCount,
    createTime: timestampFromDate(cluster.createdAt),
    onlineMoveSource: online.source,
    onlineMoveTarget: online.target,
    onlineMoveNote: online.note,
  };
}

function poolDatabaseMessage(pool: PoolDatabaseView) {
  return {
    cluster: pool.cluster,
    name: pool.name,
    state: pool.state === poolStates.draining ? PoolDatabaseState.DRAINING : PoolDatabaseState.READY,
    tenantCount: pool.tenantCount,
  };
}

/** `tenantry.platform.v1.ClusterService` over the cluster registry. */
export function clusterService(orm: MikroORM, clusters: ClusterRegistry, audit: AuditLog): ServiceImpl<typeof ClusterService> {
  return {
    async registerCluster(req, ctx) {
      const detail = { name: req.name, host: req.host, port: req.port, capacity: req.capacity, region: req.region, state: ClusterState[req.state] };
      const poolCapacity = req.poolCapacity === 0 ? ((await findCluster(orm.em.fork(), req.name))?.poolCapacity ?? defaultPoolCapacity) : req.poolCapacity;
      const cluster = await audit.audited(ctx, undefined, { ...detail, poolCapacity }, () => clusters.register({
        name: req.name,
        host: req.host,
        port: req.port === 0 ? 5432 : req.port,
        adminUser: req.adminUser,
        adminPassword: req.adminPassword,
        capacity: req.capacity,
        poolCapacity,
        region: req.region,
        state: req.state === ClusterState.DRAINING ? clusterStates.draining : clusterStates.accepting,
      }));
      const listed = await listClusters(orm.em.fork());
      const counts = listed.find((c) => c.cluster.name === cluster.name) ?? { tenantCount: 0, pooledCount: 0 };
      return { cluster: clusterMessage(cluster, counts, await onlineMoveSupport(clusters, cluster.name)) };
    },
    async listClusters() {
      const listed = await listClusters(orm.em.fork());
      // Each cluster is asked at once: one that cannot be reached costs its connect timeout, not the others'.
      const online = await Promise.all(listed.map(({ cluster }) => onlineMoveSupport(clusters, cluster.name)));
      return { clusters: listed.map((counts, i) => clusterMessage(counts.cluster, counts, online[i]!)) };
    },
    async listPoolDatabases(req) {
      return { poolDatabases: (await listClusterPoolDatabases(orm, req.cluster)).map(poolDatabaseMessage) };
    },
    async setPoolDatabaseState(req, ctx) {
      const detail = { cluster: req.cluster, poolDatabase: req.poolDatabase, state: PoolDatabaseState[req.state] };
      const pool = await audit.audited(ctx, undefined, detail, async () => {
        if (req.state !== PoolDatabaseState.READY && req.state !== PoolDatabaseState.DRAINING) {
          throw new ConnectError(`state ${req.state} is not one to set: use POOL_DATABASE_STATE_READY or POOL_DATABASE_STATE_DRAINING`, Code.InvalidArgument);
        }
        return setPoolDatabaseState(orm, req.cluster, req.poolDatabase, req.state === PoolDatabaseState.DRAINING ? poolStates.draining : poolStates.ready);
      });
      return { poolDatabase: poolDatabaseMessage(pool) };
    },
  };
}
