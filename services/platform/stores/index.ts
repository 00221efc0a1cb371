export { appendAuditEvent, auditOutcomes, listAuditEvents, type NewAuditEvent } from "./audit-event-store.ts";
export {
  adminPasswordContext,
  clusterStates,
  findCluster,
  listClusters,
  recordTemplatePassword,
  recordTemplateVersions,
  templatePasswordContext,
  upsertCluster,
  type ClusterStateName,
} from "./cluster-store.ts";
export { createPlatformOrm, ensurePlatformDatabase, migratePlatformDatabase, parseDatabaseUrl } from "./platform-database.ts";
export { recordedLatestVersions, recordSchemaService, type SchemaServiceRecord } from "./schema-service-store.ts";
export {
  countSchemaStates,
  failedMigrations,
  forgetVersions,
  ledgerOfServedTenants,
  ledgerStates,
  recordMigrated,
  recordMigrationFailure,
  versionsOf,
  type FailedMigration,
  type LedgerEntry,
} from "./schema-version-ledger.ts";
export {
  changeStatus,
  changeTenant,
  countTenantsByStatus,
  deleteFailedTenant,
  findOffboardingTenants,
  findProvisioningTenants,
  findTenant,
  getTenant,
  insertTenant,
  listTenants,
  ownerPasswordContext,
  restartProvisioning,
  rolePasswordContext,
  startOffboarding,
  statusName,
  statusNames,
  statusOf,
  tierName,
  tierOf,
  type TenantChange,
} from "./tenant-store.ts";
