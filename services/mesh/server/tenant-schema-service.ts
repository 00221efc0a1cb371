import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import type { EntityManager } from "@mikro-orm/postgresql";
import { TenantSchemaService, type MigrateManyResponseSchema, type MigrateRequest, type MigrateResponseSchema } from "../../../gen/tenantry/schema/v1/tenant_schema_service_pb.js";
import type { Permission } from "../access/declared-permissions.ts";
import type { TenantEndpoint } from "../tenancy/connection-budget.ts";
import { checkTenantId } from "../wire/tenant-id.ts";
import { isDatabaseUnreachable } from "../tenancy/database-unreachable.ts";
import type { Tenancy } from "../tenancy/tenancy.ts";
import { TenantStatus } from "../tenancy/tenant-directory.ts";

export { TenantSchemaService };

/** What a service declares of permissions, and keeps of them, for {@link tenantSchemaService}. */
export interface SchemaPermissions {
  /** The permissions the service's RPC services declare (see `declaredPermissions`): DescribeSchema publishes them. */
  declared: readonly Permission[];
  /**
   * For the service that keeps tenants' permission catalogs (Auth): merges
   * `permissions` into the catalog of the database in scope and returns the
   * names it added. Migrate calls it after the migrations, with the
   * declared permissions and then the request's.
   */
  merge?: (em: EntityManager, permissions: Permission[]) => Promise<string[]>;
}

/**
 * What a service does when a tenant's database turns out to hold a copy of
 * another tenant's data (a clone restored from a backup): replace or drop
 * what is bound to the source's identity. Runs in the tenant's scope.
 */
export type AdoptCopy = (em: EntityManager, copy: { tenantId: string; sourceTenantId: string }) => Promise<void>;

/**
 * Implements `tenantry.schema.v1.TenantSchemaService` for the schema a
 * service owns: Platform calls it to migrate each tenant, and the service
 * runs its own migrations there (and, in Auth, merges the permission
 * catalog). `adoptCopy` is the service's part in cloning a tenant, if it
 * keeps anything bound to the tenant's identity.
 */
export function tenantSchemaService(service: string, tenancy: Tenancy, permissions: SchemaPermissions, adoptCopy?: AdoptCopy): ServiceImpl<typeof TenantSchemaService> {
  async function routeOf(tenantId: string) {
    const route = await tenancy.directory.lookup(tenantId, "tenant_id");
    if (route.status === TenantStatus.DELETED || route.status === TenantStatus.OFFBOARDING) {
      throw new ConnectError(`tenant "${tenantId}" is being removed; its schema is not migrated`, Code.FailedPrecondition);
    }
    return route;
  }
  async function migrate(endpoint: TenantEndpoint, req: Pick<MigrateRequest, "toVersion" | "permissions">): Promise<MessageInitShape<typeof MigrateResponseSchema>> {
    const to = req.toVersion === "" ? undefined : req.toVersion;
    const { applied, version } = await tenancy.migrate(endpoint, { to });
    const { merge } = permissions;
    // Below the newest version the catalog's tables may not be as merging expects them.
    const addedPermissions = merge === undefined || to !== undefined ? [] : await tenancy.scope.run(endpoint, () => merge(tenancy.fork(), [...permissions.declared, ...req.permissions]));
    return { service, applied, version, addedPermissions };
  }
  /** Migrate of a tenant by id: its errors as Migrate answers them. */
  async function migrateTenant(tenantId: string, req: Pick<MigrateRequest, "toVersion" | "permissions">): Promise<MessageInitShape<typeof MigrateResponseSchema>> {
    const route = await routeOf(tenantId);
    try {
      return await migrate(tenancy.endpointOf(route), req);
    } catch (error) {
      // An unreachable database is answered UNAVAILABLE (see errorInterceptor): Platform may retry.
      if (error instanceof ConnectError || isDatabaseUnreachable(error)) {
        throw error;
      }
      // What the connection budget said (UNAVAILABLE: a pooled tenant refused its role), under the ORM's wrapping: answered as it is.
      const refused = connectErrorCause(error);
      if (refused !== undefined) {
        throw refused;
      }
      // For Platform's ledger and the operator: the migration was rolled back, and why.
      throw new ConnectError(`${service} migration of tenant "${tenantId}" failed and was rolled back: ${(error as Error).message}`, Code.Internal);
    }
  }
  return {
    async migrate(req) {
      if (req.target !== undefined) {
        const { target } = req;
        if (target.host === "" || target.database === "" || target.user === "" || target.port === 0 || target.port > 65535) {
          throw new ConnectError("target needs host, port, database and user", Code.InvalidArgument);
        }
        const endpoint = tenancy.databaseEndpoint(target);
        if (endpoint.sessionRole !== "") {
          // Schemas in a pool database (a slot of its stock, a restore's, a move's target), never a template: its shared
          // connections stay open, and, as after a migration, none keeps the target's role and path for its next lease.
          return await migrate({ ...endpoint, migration: true }, req);
        }
        try {
          return await migrate(endpoint, req);
        } finally {
          // Such targets are templates: a copy needs them without connections.
          await tenancy.budget.retire(endpoint.tenantId);
        }
      }
      return migrateTenant(req.tenantId, req);
    },
    async *migrateMany(req, ctx) {
      if (req.tenantIds.length === 0 || req.tenantIds.length > maxMigrateMany) {
        throw new ConnectError(`tenant_ids names ${req.tenantIds.length} tenants: name 1 to ${maxMigrateMany}`, Code.InvalidArgument);
      }
      const tenantIds = req.tenantIds.map((id, i) => checkTenantId(id, `tenant_ids[${i}]`));
      const repeated = tenantIds.find((id, i) => tenantIds.indexOf(id) !== i);
      if (repeated !== undefined) {
        throw new ConnectError(`tenant_ids names tenant "${repeated}" more than once`, Code.InvalidArgument);
      }
      const request = { toVersion: "", permissions: req.permissions };
      // Their routes in one request to Platform rather than one each.
      await tenancy.directory.prefetch(tenantIds);
      for (const tenantId of tenantIds) {
        if (ctx.signal.aborted) {
          // The caller is gone (stopped, or past its deadline): the tenants after are left as they are.
          return;
        }
        let result: MessageInitShape<typeof MigrateManyResponseSchema>["result"];
        try {
          result = { case: "migrated", value: await migrateTenant(tenantId, request) };
        } catch (error) {
          // As the error interceptor answers Migrate: a database out of reach is UNAVAILABLE (anything else is a ConnectError by now).
          const failure = !(error instanceof ConnectError) && isDatabaseUnreachable(error) ? new ConnectError(`the database of tenant "${tenantId}" is unreachable; retry later`, Code.Unavailable) : ConnectError.from(error);
          result = { case: "error", value: { code: failure.code, message: failure.rawMessage } };
        }
        yield { tenantId, result };
      }
    },
    async adoptCopy(req) {
      const route = await routeOf(req.tenantId);
      checkTenantId(req.sourceTenantId, "source_tenant_id");
      if (adoptCopy !== undefined) {
        const copy = { tenantId: route.tenantId, sourceTenantId: req.sourceTenantId };
        await tenancy.scope.run(tenancy.endpointOf(route), () => adoptCopy(tenancy.fork(), copy));
      }
      return {};
    },
    describeSchema() {
      const migrations = tenancy.migrationNames();
      return { service, migrations, latestVersion: migrations.at(-1) ?? "", permissions: [...permissions.declared] };
    },
    async getSchemaStatus(req) {
      const state = await tenancy.schemaState(await routeOf(req.tenantId));
      return { service, ...state };
    },
  };
}

/** The most tenants one MigrateMany takes. */
const maxMigrateMany = 1000;

/** The ConnectError an error was caused by (the ORM wraps what the connection budget throws), if any. */
function connectErrorCause(error: unknown): ConnectError | undefined {
  for (let cause = error, depth = 0; typeof cause === "object" && cause !== null && depth < 8; cause = (cause as { cause?: unknown }).cause, depth++) {
    if (cause instanceof ConnectError) {
      return cause;
    }
  }
  return undefined;
}
