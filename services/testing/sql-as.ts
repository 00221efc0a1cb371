import pg from "pg";
import type { TenantRoute } from "../../gen/tenantry/platform/v1/platform_service_pb.js";

/** What {@link sqlAs} needs of a tenant's route. */
export type TenantLogin = Pick<TenantRoute, "host" | "port" | "database" | "user" | "password" | "sessionRole" | "schemaPrefix">;

/**
 * Runs SQL in a tenant's schema of a service as the tenant's role, on a
 * connection of its own: the route's login, then (pooled) `SET ROLE` to the
 * tenant's role, and the service's schema (`schemaPrefix + service`, just
 * the service's name in a dedicated database) as the search_path. The same
 * unqualified SQL therefore reads a tenant's tables in either placement, with
 * only the rights the service has on them.
 */
export async function sqlAs<R extends pg.QueryResultRow = Record<string, unknown>>(route: TenantLogin, service: string, text: string, values?: unknown[]): Promise<R[]> {
  const client = new pg.Client({ host: route.host, port: route.port, database: route.database, user: route.user, password: route.password });
  await client.connect();
  try {
    if (route.sessionRole !== "") {
      await client.query(`set role ${pg.escapeIdentifier(route.sessionRole)}`);
    }
    await client.query(`set search_path to ${pg.escapeIdentifier(route.schemaPrefix + service)}`);
    return (await client.query<R>(text, values)).rows;
  } finally {
    await client.end();
  }
}

/**
 * The physical name of a tenant's schema of a service, quoted for SQL: the
 * service's name in a dedicated database, the tenant's prefix and the name in
 * a pool database. For SQL that runs as the superuser in the tenant's database.
 */
export function schemaOf(route: Pick<TenantRoute, "schemaPrefix">, service: string): string {
  return pg.escapeIdentifier(route.schemaPrefix + service);
}
