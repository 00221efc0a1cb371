import { defineEntity, p, type InferEntity } from "@mikro-orm/core";

/** The schema version a service reported for a tenant (`platform.tenant_schema_versions`). */
export const TenantSchemaVersion = defineEntity({
  name: "TenantSchemaVersion",
  tableName: "tenant_schema_versions",
  properties: {
    tenantId: p.string().primary().length(40),
    service: p.string().primary().length(40),
    version: p.string().length(200),
    updatedAt: p.datetime(3),
  },
});

export type TenantSchemaVersion = InferEntity<typeof TenantSchemaVersion>;
