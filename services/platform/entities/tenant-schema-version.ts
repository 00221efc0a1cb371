import { defineEntity, p, type InferEntity } from "@mikro-orm/core";

/**
 * The ledger (`platform.tenant_schema_versions`): the schema version a
 * service reported for a tenant, and how its last migration attempt ended.
 */
export const TenantSchemaVersion = defineEntity({
  name: "TenantSchemaVersion",
  tableName: "tenant_schema_versions",
  properties: {
    tenantId: p.string().primary().length(40),
    service: p.string().primary().length(40),
    version: p.string().length(200),
    updatedAt: p.datetime(3),
    /** "succeeded" or "failed": the last attempt's outcome. */
    status: p.string().length(20).default("succeeded"),
    error: p.text().nullable(),
    attempts: p.integer().default(1),
    attemptedAt: p.datetime(3),
    /** For Auth: the digest of the permission catalog last merged into the tenant's; null when none is recorded. */
    permissionsDigest: p.string().length(64).nullable(),
  },
});

export type TenantSchemaVersion = InferEntity<typeof TenantSchemaVersion>;
