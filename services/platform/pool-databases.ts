import { Code, ConnectError } from "@connectrpc/connect";
import type { MikroORM } from "@mikro-orm/postgresql";
import { lockForTransaction } from "./advisory-locks.ts";
import { changePoolDatabaseState, findCluster, listPoolDatabases, type PoolStateName } from "./stores/index.ts";

/** A pool database as operators see it. */
export interface PoolDatabaseView {
  cluster: string;
  name: string;
  state: PoolStateName;
  /** Pooled tenants it holds, those being provisioned included. */
  tenantCount: number;
}

/** The pool databases of a cluster, by name; NOT_FOUND for an unknown cluster. */
export async function listClusterPoolDatabases(orm: MikroORM, cluster: string): Promise<PoolDatabaseView[]> {
  const em = orm.em.fork();
  if ((await findCluster(em, cluster)) === null) {
    throw new ConnectError(`cluster "${cluster}" is not registered; see ListClusters`, Code.NotFound);
  }
  return (await listPoolDatabases(em, cluster)).map(({ name, state, tenantCount }) => ({ cluster, name, state: state as PoolStateName, tenantCount }));
}

/**
 * Sets whether a pool database takes new pooled tenants, under the lock
 * its cluster's pool choices take (provisioning's choosePoolDatabase):
 * once it returns, no choice under way takes a pool database set
 * draining. NOT_FOUND for an unknown cluster or pool database.
 */
export async function setPoolDatabaseState(orm: MikroORM, cluster: string, name: string, state: PoolStateName): Promise<PoolDatabaseView> {
  const em = orm.em.fork();
  if ((await findCluster(em, cluster)) === null) {
    throw new ConnectError(`cluster "${cluster}" is not registered; see ListClusters`, Code.NotFound);
  }
  const found = await em.transactional(async (tx) => {
    await lockForTransaction(tx, `pool:${cluster}`);
    return changePoolDatabaseState(tx, cluster, name, state);
  });
  if (!found) {
    throw new ConnectError(`cluster "${cluster}" has no pool database "${name}"; see ListPoolDatabases`, Code.NotFound);
  }
  return (await listClusterPoolDatabases(orm, cluster)).find((pool) => pool.name === name)!;
}
