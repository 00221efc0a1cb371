// The mesh runtime every Tenantry service uses, by concern. Each folder
// imports only itself and the folders before it in this list; the files at
// the top (this index, run-main.ts, tenant-service.ts) may import any.
//   runtime/    configuration, secrets, start errors, the embedded database
//   telemetry/  the logger, tracing and metrics of a process
//   wire/       request and response helpers: ids, paging, field masks, metadata
//   access/     credentials, user tokens, the access interceptor
//   tenancy/    tenant routes, per-tenant connections and EntityManagers, quotas
//   client/     mesh clients: Connect over grpc-js
//   server/     the listeners, health, reflection and the interceptor chain
// Code outside services/mesh imports only this file, or run-main.ts from a
// service's main (this file loads pg, which must load after telemetry has
// started). `npm run check` enforces all of it (scripts/check-imports.ts).
export { addressMap, commaList, commonEnv, ConfigError, port, positiveInt, readConfig, telemetryEnv, tenantServiceEnv } from "./runtime/config.ts";
export { startEmbeddedDatabase, type EmbeddedDatabase, type EmbeddedDatabaseOptions } from "./runtime/embedded-database.ts";
export { SecretBox } from "./runtime/secret-box.ts";
export { loadSecret, type Secret } from "./runtime/secret-file.ts";
export { StartError } from "./runtime/start-error.ts";

export { createLogger, type Logger } from "./telemetry/logger.ts";
export { startTelemetry, type Telemetry, type TelemetryOptions } from "./telemetry/telemetry.ts";

export { checkEmail, checkPassword } from "./wire/account-fields.ts";
export { readFieldMask } from "./wire/field-mask.ts";
export { pageOf, pageSizes, readPage, type Page, type PageRequest } from "./wire/paging.ts";
export { checkTenantId, isTenantId, tenantDatabaseName, tenantIdHeader } from "./wire/tenant-id.ts";
export { checkTextLine } from "./wire/text-line.ts";
export { checkUuid, isUuid } from "./wire/uuid.ts";

export { accessOf, AccessKind } from "./access/access.ts";
export { authKeySets } from "./access/auth-key-sets.ts";
export { declaredPermissions, uniquePermissions, type Permission } from "./access/declared-permissions.ts";
export { kCaller, kUser } from "./access/caller-context.ts";
export { loadMeshCredentials, MeshCredentials, operatorCredentialInterceptor, type Caller } from "./access/credentials.ts";
export { UserTokens, type TokenUser, type TokenVerifier } from "./access/user-tokens.ts";

export { ConnectionBudget, type ConnectionBudgetOptions, type ConnectionBudgetStats, type TenantEndpoint } from "./tenancy/connection-budget.ts";
export { discardLostConnections, watchConnectionLoss } from "./tenancy/connection-loss.ts";
export { isDatabaseUnreachable } from "./tenancy/database-unreachable.ts";
export { migrationTableName, readAppliedMigrations, type MigrationTableConnection } from "./tenancy/migration-table.ts";
export type { PlatformRoutes, TenantChange } from "./tenancy/platform-routes.ts";
export { RequestLedger, requestLedgerMigration, type RequestLedgerOptions } from "./tenancy/request-ledger.ts";
export { StorageQuota } from "./tenancy/storage-quota.ts";
export { Tenancy, type MigrationOutcome, type SchemaState } from "./tenancy/tenancy.ts";
export { entityManagerIn, entityManagerOf, kEntityManager, kTenant, tenantOf } from "./tenancy/tenant-context.ts";
export { TenantDirectory, TenantStatus, type TenantRoute } from "./tenancy/tenant-directory.ts";
export { tenantInterceptor } from "./tenancy/tenant-interceptor.ts";
export { TenantScope } from "./tenancy/tenant-scope.ts";
export { WriteFreezes, type WriteFreezeNotice, type WriteFreezesOptions } from "./tenancy/write-freezes.ts";

export { createGrpcJsTransport, waitForReadyKey, type GrpcJsTransport } from "./client/grpc-transport.ts";

export { listenerOptions, startMeshServer, type MeshServer, type ServiceRegistration } from "./server/mesh-server.ts";
export { kPeer } from "./server/peer-context.ts";
export { tenantSchemaService, TenantSchemaService, type AdoptCopy, type SchemaPermissions } from "./server/tenant-schema-service.ts";

export { startTenantService, type TenantService, type TenantServiceConfig, type TenantServiceOverrides } from "./tenant-service.ts";
