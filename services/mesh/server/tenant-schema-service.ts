import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { TenantSchemaService } from "../../../gen/tenantry/schema/v1/tenant_schema_service_pb.js";
import { isDatabaseUnreachable } from "../tenancy/database-unreachable.ts";
import type { Tenancy } from "../tenancy/tenancy.ts";
import { TenantStatus } from "../tenancy/tenant-directory.ts";

export { TenantSchemaService };

/**
 * Implements `tenantry.schema.v1.TenantSchemaService` for the schema a
 * service owns: Platform calls it to migrate each tenant, and the service
 * runs its own migrations there.
 */
export function tenantSchemaService(service: string, tenancy: Tenancy): ServiceImpl<typeof TenantSchemaService> {
  async function routeOf(tenantId: string) {
    const route = await tenancy.directory.lookup(tenantId, "tenant_id");
    if (route.status === TenantStatus.DELETED || route.status === TenantStatus.OFFBOARDING) {
      throw new ConnectError(`tenant "${tenantId}" is being removed; its schema is not migrated`, Code.FailedPrecondition);
    }
    return route;
  }
  return {
    async migrate(req) {
      if (req.target !== undefined) {
        const { target } = req;
        if (target.host === "" || target.database === "" || target.user === "" || target.port === 0 || target.port > 65535) {
          throw new ConnectError("target needs host, port, database and user", Code.InvalidArgument);
        }
        const endpoint = { ...target, tenantId: `database:${target.host}:${target.port}/${target.database}` };
        try {
          const outcome = await tenancy.migrate(endpoint);
          return { service, applied: outcome.applied, version: outcome.version };
        } finally {
          // Such targets are templates: a copy needs them without connections.
          await tenancy.budget.retire(endpoint.tenantId);
        }
      }
      const route = await routeOf(req.tenantId);
      try {
        const outcome = await tenancy.migrate(route);
        return { service, applied: outcome.applied, version: outcome.version };
      } catch (error) {
        // An unreachable database is answered UNAVAILABLE (see errorInterceptor): Platform may retry.
        if (error instanceof ConnectError || isDatabaseUnreachable(error)) {
          throw error;
        }
        // For Platform's ledger and the operator: the migration was rolled back, and why.
        throw new ConnectError(`${service} migration of tenant "${req.tenantId}" failed and was rolled back: ${(error as Error).message}`, Code.Internal);
      }
    },
    describeSchema() {
      const migrations = tenancy.migrationNames();
      return { service, migrations, latestVersion: migrations.at(-1) ?? "" };
    },
    async getSchemaStatus(req) {
      const state = await tenancy.schemaState(await routeOf(req.tenantId));
      return { service, ...state };
    },
  };
}
