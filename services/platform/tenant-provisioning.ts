import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { UniqueConstraintViolationException, type EntityManager } from "@mikro-orm/postgresql";
import pg from "pg";
import { TenantStatus, type Tier } from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import type { TenantSchemaService } from "../../gen/tenantry/schema/v1/tenant_schema_service_pb.js";
import { checkTenantId, tenantDatabaseName, type Logger } from "../mesh/index.ts";
import { Tenant } from "./entities/tenant.ts";
import { TenantSchemaVersion } from "./entities/tenant-schema-version.ts";
import { checkTier, statusName, tierName } from "./tenant-records.ts";

/** What provisioning needs besides the registry. */
export interface ProvisioningDeps {
  /** Clients of the services that own a schema in every tenant database, by service name. */
  schemaServices: Map<string, Client<typeof TenantSchemaService>>;
  /** How long one service may take to migrate one tenant. */
  migrateTimeoutMs: number;
  log: Logger;
}

/** A request for a new tenant. */
export interface NewTenant {
  tenantId: string;
  displayName: string;
  tier: Tier;
}

/**
 * Provisions a tenant: records it PROVISIONING, creates its database, has
 * every schema-owning service migrate it (recording the versions they
 * report), and only then marks it ACTIVE. On any failure the database it
 * created is dropped and the tenant is left FAILED with the error.
 */
export async function provisionTenant(em: EntityManager, deps: ProvisioningDeps, request: NewTenant): Promise<Tenant> {
  const tenantId = checkTenantId(request.tenantId);
  const displayName = request.displayName.trim() === "" ? tenantId : request.displayName.trim();
  if ([...displayName].length > 200) {
    throw new ConnectError("display_name is longer than 200 characters", Code.InvalidArgument);
  }
  const tier = checkTier(request.tier);
  const database = tenantDatabaseName(tenantId);
  const now = new Date();
  const tenant = em.create(Tenant, {
    id: tenantId,
    displayName,
    tier: tierName(tier),
    status: statusName(TenantStatus.PROVISIONING),
    database,
    error: null,
    createdAt: now,
    updatedAt: now,
  });
  try {
    await em.persist(tenant).flush();
  } catch (error) {
    if (error instanceof UniqueConstraintViolationException) {
      const existing = await em.fork().findOne(Tenant, { id: tenantId });
      throw new ConnectError(
        `tenant "${tenantId}" already exists${existing ? ` (status ${existing.status})` : ""}; choose another id`,
        Code.AlreadyExists,
      );
    }
    throw error;
  }

  let created = false;
  try {
    await em.execute(`create database ${pg.escapeIdentifier(database)}`);
    created = true;
    for (const [service, client] of deps.schemaServices) {
      const result = await client
        .migrate({ tenantId }, { timeoutMs: deps.migrateTimeoutMs })
        .catch((error: unknown) => {
          throw new ProvisioningError(`${service} could not migrate the tenant's schema: ${ConnectError.from(error).rawMessage}`, ConnectError.from(error).code);
        });
      em.create(TenantSchemaVersion, { tenantId, service, version: result.version, updatedAt: new Date() });
    }
    tenant.status = statusName(TenantStatus.ACTIVE);
    tenant.updatedAt = new Date();
    await em.flush();
    deps.log.info({ tenantId, database }, "tenant provisioned");
    return tenant;
  } catch (error) {
    const reason = error instanceof ProvisioningError ? error.message : describe(error);
    deps.log.error({ err: error, tenantId }, "provisioning failed");
    em.clear();
    if (created) {
      await em
        .execute(`drop database if exists ${pg.escapeIdentifier(database)} with (force)`)
        .catch((dropError: unknown) => deps.log.error({ err: dropError, tenantId }, "could not drop the failed tenant's database"));
    }
    await em.nativeDelete(TenantSchemaVersion, { tenantId });
    await em.nativeUpdate(Tenant, { id: tenantId }, { status: statusName(TenantStatus.FAILED), error: reason, updatedAt: new Date() });
    const code = error instanceof ProvisioningError && (error.code === Code.Unavailable || error.code === Code.DeadlineExceeded) ? Code.Unavailable : Code.Internal;
    throw new ConnectError(`provisioning tenant "${tenantId}" failed and it is left FAILED: ${reason}`, code);
  }
}

class ProvisioningError extends Error {
  readonly code: Code;
  constructor(message: string, code: Code) {
    super(message);
    this.code = code;
  }
}

function describe(error: unknown): string {
  const code = (error as { code?: unknown }).code;
  if (code === "42P04") {
    return "a database with the tenant's name already exists on the server";
  }
  return "an internal error; the Platform log has the detail";
}
