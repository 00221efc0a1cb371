import type { Interceptor } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import type { EntitySchema, MigrationObject } from "@mikro-orm/postgresql";
import { authKeySets } from "./access/auth-key-sets.ts";
import { declaredPermissions } from "./access/declared-permissions.ts";
import { loadMeshCredentials } from "./access/credentials.ts";
import { UserTokens, type TokenVerifier } from "./access/user-tokens.ts";
import { createGrpcJsTransport } from "./client/grpc-transport.ts";
import type { tenantServiceEnv } from "./runtime/config.ts";
import { listenerOptions, startMeshServer, type MeshServer, type ServiceRegistration } from "./server/mesh-server.ts";
import { TenantSchemaService, tenantSchemaService, type AdoptCopy, type SchemaPermissions } from "./server/tenant-schema-service.ts";
import type { Logger } from "./telemetry/logger.ts";
import type { Telemetry } from "./telemetry/telemetry.ts";
import { observeConnectionBudget } from "./tenancy/connection-budget-metrics.ts";
import { platformRoutes, type PlatformRoutes } from "./tenancy/platform-routes.ts";
import { Tenancy } from "./tenancy/tenancy.ts";
import { watchTenantChanges } from "./tenancy/tenant-change-watch.ts";
import { TenantDirectory, TenantStatus } from "./tenancy/tenant-directory.ts";
import { WriteFreezes } from "./tenancy/write-freezes.ts";
import type { z } from "zod";

/** The configuration a tenant service reads (see `tenantServiceEnv`). */
export type TenantServiceConfig = z.infer<z.ZodObject<typeof tenantServiceEnv>> & {
  TENANTRY_GRPC_PORT: number;
  TENANTRY_HTTP_PORT: number;
};

/** Options of {@link startTenantService}. */
export interface TenantServiceOptions {
  /** The service's name, also the schema it owns in every tenant database. */
  name: string;
  /** The service's entities. */
  entities: EntitySchema[];
  /** The service's migrations, oldest first. */
  migrations: MigrationObject[];
  /**
   * The RPC services it serves, given its tenancy. TenantSchemaService is
   * added, publishing the permissions these declare.
   */
  services: (tenancy: Tenancy) => ServiceRegistration[];
  /** Given by the service that keeps tenants' permission catalogs (Auth): see `SchemaPermissions.merge`. */
  mergePermissions?: SchemaPermissions["merge"];
  /** Given by a service that keeps something bound to the tenant's identity (Auth's signing keys): see {@link AdoptCopy}. */
  adoptCopy?: AdoptCopy;
  /**
   * Replaces the verification of users' access tokens (benchmarks measure
   * what it costs); by default tokens are verified against Auth's key sets.
   */
  userTokens?: TokenVerifier;
  /**
   * Replaces Platform as the source of tenants' routes and their changes
   * (tests that run one service alone); by default Platform's ResolveTenant
   * and WatchTenants at TENANTRY_PLATFORM_ADDRESS.
   */
  tenantRoutes?: PlatformRoutes;
  /** Interceptors run between the tenant's resolution and the handler (see `interceptorChain`). */
  interceptors?: Interceptor[];
  config: TenantServiceConfig;
  log: Logger;
  /** The process's telemetry (see `runMain`). */
  telemetry: Telemetry;
}

/** What a test or a benchmark may replace when it starts a tenant service (see {@link TenantServiceOptions}). */
export type TenantServiceOverrides = Partial<Pick<TenantServiceOptions, "migrations" | "userTokens" | "tenantRoutes">>;

/** A running tenant service. */
export interface TenantService extends MeshServer {
  tenancy: Tenancy;
}

/**
 * Starts a service that serves tenants' data: it resolves tenants through
 * Platform (or `tenantRoutes`), routes each call to its tenant's database,
 * serves its own schema's migrations to Platform, and listens on both ports.
 */
export async function startTenantService(options: TenantServiceOptions): Promise<TenantService> {
  const { config, log, telemetry } = options;
  const credentials = await loadMeshCredentials(config, options.name);
  const transport =
    options.tenantRoutes === undefined
      ? createGrpcJsTransport({
          address: config.TENANTRY_PLATFORM_ADDRESS,
          interceptors: [credentials.clientInterceptor()],
          // Platform restarts and starts later than this service: wait for it (every call here has a deadline).
          waitForReady: true,
        })
      : undefined;
  const platform = options.tenantRoutes ?? platformRoutes(transport!);
  const directory = new TenantDirectory({
    maxEntries: config.TENANTRY_TENANT_CACHE_SIZE,
    ttlMs: config.TENANTRY_TENANT_CACHE_TTL_MS,
    watchedTtlMs: config.TENANTRY_TENANT_WATCHED_TTL_MS,
    maxStalenessMs: config.TENANTRY_TENANT_MAX_STALENESS_MS,
    resolve: (tenantId, signal) => platform.resolve(tenantId, { signal, timeoutMs: config.TENANTRY_PLATFORM_TIMEOUT_MS }),
    ...(platform.resolveMany === undefined ? {} : { resolveMany: (tenantIds: string[], signal: AbortSignal) => platform.resolveMany!(tenantIds, { signal, timeoutMs: config.TENANTRY_PLATFORM_TIMEOUT_MS }) }),
  });
  // Names this process to Platform's change feed, which then waits for it to acknowledge each write freeze.
  const instanceId = randomUUID();
  const freezes = new WriteFreezes({
    maxHoldMs: config.TENANTRY_FREEZE_MAX_MS,
    acknowledge: ({ tenantId, freezeId }) => platform.acknowledgeFreeze({ tenantId, freezeId, instanceId }, { timeoutMs: config.TENANTRY_PLATFORM_TIMEOUT_MS }),
    log,
  });
  const tenancy = new Tenancy({
    schema: options.name,
    entities: options.entities,
    migrations: options.migrations,
    directory,
    freezes,
    storageCheckIntervalMs: config.TENANTRY_STORAGE_CHECK_INTERVAL_MS,
    // Every instance of the service must derive the same key; a new mesh key refuses repeats of older requests.
    requestKey: credentials.derivedKey("request fingerprints"),
    connections: {
      maxConnections: config.TENANTRY_DB_MAX_CONNECTIONS,
      maxConnectionsPerTenant: Math.min(config.TENANTRY_DB_MAX_CONNECTIONS_PER_TENANT, config.TENANTRY_DB_MAX_CONNECTIONS),
      maxConnectionsPerPoolDatabase: Math.min(config.TENANTRY_DB_MAX_CONNECTIONS_PER_POOL, config.TENANTRY_DB_MAX_CONNECTIONS),
      maxPooledLeasesPerServer: Math.min(config.TENANTRY_DB_MAX_POOLED_LEASES_PER_SERVER, config.TENANTRY_DB_MAX_CONNECTIONS),
      acquireTimeoutMs: config.TENANTRY_DB_ACQUIRE_TIMEOUT_MS,
      idleTimeoutMs: config.TENANTRY_DB_IDLE_TIMEOUT_MS,
      applicationName: `tenantry-${options.name}`,
      onError: (error, tenantId) => log.warn({ err: error, tenantId }, "tenant database connection failed"),
    },
  });
  const unobserveBudget = observeConnectionBudget(telemetry.meter, tenancy.budget, { service: options.name });
  const watching = new AbortController();
  const watched = watchTenantChanges({
    platform,
    instanceId,
    signal: watching.signal,
    log,
    onConnected: (inForce) => {
      directory.setWatching(true);
      freezes.reset(inForce);
    },
    onDisconnected: () => directory.setWatching(false),
    onFreeze: (freeze) => freezes.apply(freeze),
    onChange: (tenantId, status) => {
      directory.invalidate(tenantId);
      tenancy.storage.forget(tenantId);
      if (status !== TenantStatus.ACTIVE) {
        // Suspended, offboarded: its connections have no more use here.
        void tenancy.budget.retire(tenantId);
      }
    },
  });
  // Each tenant's key set comes from Auth (Auth asks itself the same way).
  const authTransport = createGrpcJsTransport({ address: config.TENANTRY_AUTH_ADDRESS, waitForReady: true });
  const userTokens = options.userTokens ?? new UserTokens({
    fetchKeySet: authKeySets(authTransport),
    issuer: config.TENANTRY_TOKEN_ISSUER,
    // Auth may itself wait for Platform to resolve the tenant: allow for that.
    timeoutMs: 2 * config.TENANTRY_PLATFORM_TIMEOUT_MS + 1000,
  });
  const services = options.services(tenancy);
  const permissions: SchemaPermissions = { declared: declaredPermissions(services.map((s) => s.service)), merge: options.mergePermissions };
  const server = await startMeshServer({
    name: options.name,
    services: [...services, { service: TenantSchemaService, impl: tenantSchemaService(options.name, tenancy, permissions, options.adoptCopy) }],
    interceptors: options.interceptors ?? [],
    credentials,
    userTokens,
    tenancy,
    ...listenerOptions(config),
    log,
    telemetry,
    onShutdown: async () => {
      watching.abort();
      freezes.close();
      // The watch ends at once when aborted; never let shutdown hang on it.
      await Promise.race([watched, new Promise((resolve) => setTimeout(resolve, 2000).unref())]);
      unobserveBudget();
      await tenancy.close();
      transport?.close();
      authTransport.close();
    },
  });
  return Object.assign(server, { tenancy });
}
