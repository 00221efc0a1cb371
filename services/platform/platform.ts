import { createClient } from "@connectrpc/connect";
import { TenantSchemaService } from "../../gen/tenantry/schema/v1/tenant_schema_service_pb.js";
import { createGrpcJsTransport, listenerOptions, loadMeshCredentials, startMeshServer, type Logger, type MeshServer } from "../mesh/index.ts";
import type { PlatformConfig } from "./config.ts";
import { createPlatformOrm, ensurePlatformDatabase, migratePlatformDatabase, parseDatabaseUrl } from "./platform-database.ts";
import { PlatformService, platformService } from "./platform-service.ts";

/**
 * Starts Platform: migrates its own database, then serves the tenant
 * registry and provisioning.
 */
export async function startPlatform(config: PlatformConfig, log: Logger): Promise<MeshServer> {
  await ensurePlatformDatabase(config.TENANTRY_DATABASE_URL);
  const orm = createPlatformOrm(config.TENANTRY_DATABASE_URL);
  try {
    const applied = await migratePlatformDatabase(orm);
    if (applied.length > 0) {
      log.info({ applied }, "platform database migrated");
    }
  } catch (error) {
    await orm.close();
    throw error;
  }
  const credentials = await loadMeshCredentials(config, "platform");
  const { database: _, ...cluster } = parseDatabaseUrl(config.TENANTRY_DATABASE_URL);
  const transports = [...config.TENANTRY_SCHEMA_SERVICES].map(([name, address]) => ({
    name,
    transport: createGrpcJsTransport({ address, interceptors: [credentials.clientInterceptor()] }),
  }));
  const schemaServices = new Map(transports.map(({ name, transport }) => [name, createClient(TenantSchemaService, transport)]));
  return startMeshServer({
    name: "platform",
    services: [{ service: PlatformService, impl: platformService(orm, cluster, { schemaServices, migrateTimeoutMs: 60_000, log }) }],
    interceptors: [],
    credentials,
    ...listenerOptions(config),
    log,
    onShutdown: async () => {
      transports.forEach(({ transport }) => transport.close());
      await orm.close();
    },
  });
}
