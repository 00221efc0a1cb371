import { listenerOptions, loadMeshCredentials, loadSecret, startMeshServer, type Logger, type MeshServer } from "../mesh/index.ts";
import { AdvisoryLocks } from "./advisory-locks.ts";
import { ClusterRegistry } from "./cluster-registry.ts";
import { ClusterService, clusterService } from "./cluster-service.ts";
import type { PlatformConfig } from "./config.ts";
import { createPlatformOrm, ensurePlatformDatabase, migratePlatformDatabase, parseDatabaseUrl } from "./platform-database.ts";
import { PlatformService, platformService } from "./platform-service.ts";
import { SchemaServices } from "./schema-services.ts";
import { SecretBox } from "./secret-box.ts";
import { TemplateDatabases } from "./template-databases.ts";
import { TenantProvisioner, type TenantProvisionerOptions } from "./tenant-provisioning.ts";

/** Hooks into a running Platform, for tests. */
export interface PlatformHooks {
  /** See {@link TenantProvisionerOptions.afterStep}. */
  afterStep?: TenantProvisionerOptions["afterStep"];
}

/**
 * Starts Platform: migrates its own database, registers the server of
 * TENANTRY_DATABASE_URL as cluster "default", serves the registry, and
 * resumes the tenants a previous run left half-provisioned.
 */
export async function startPlatform(config: PlatformConfig, log: Logger, hooks: PlatformHooks = {}): Promise<MeshServer> {
  await ensurePlatformDatabase(config.TENANTRY_DATABASE_URL);
  const orm = createPlatformOrm(config.TENANTRY_DATABASE_URL);
  const closers: (() => unknown)[] = [() => orm.close()];
  const closeAll = async () => {
    for (const close of closers.reverse()) {
      await close();
    }
  };
  try {
    const applied = await migratePlatformDatabase(orm);
    if (applied.length > 0) {
      log.info({ applied }, "platform database migrated");
    }
    const credentials = await loadMeshCredentials(config, "platform");
    const masterKey = await loadSecret({ value: config.TENANTRY_MASTER_KEY, dataDir: config.TENANTRY_DATA_DIR, file: "master.key" });
    const box = new SecretBox(masterKey.value);
    const clusters = new ClusterRegistry({ orm, box, log });
    closers.push(() => clusters.close());
    const { database: platformDatabase, ...server } = parseDatabaseUrl(config.TENANTRY_DATABASE_URL);
    await clusters.registerServer("default", server, {
      capacity: config.TENANTRY_DEFAULT_CLUSTER_CAPACITY,
      region: config.TENANTRY_DEFAULT_CLUSTER_REGION,
    });
    const schemas = new SchemaServices({ addresses: config.TENANTRY_SCHEMA_SERVICES, credentials });
    closers.push(() => schemas.close());
    const locks = new AdvisoryLocks({ connectionString: config.TENANTRY_DATABASE_URL, log });
    closers.push(() => locks.close());
    const templates = config.TENANTRY_TEMPLATE_DATABASES
      ? new TemplateDatabases({ orm, clusters, schemas, locks, box, name: `${platformDatabase}_template`.slice(0, 63), log })
      : undefined;
    const provisioner = new TenantProvisioner({
      orm,
      clusters,
      schemas,
      templates,
      locks,
      box,
      migrateTimeoutMs: 60_000,
      log,
      ...(hooks.afterStep === undefined ? {} : { afterStep: hooks.afterStep }),
    });
    const meshServer = await startMeshServer({
      name: "platform",
      services: [
        { service: PlatformService, impl: platformService({ orm, clusters, provisioner, box, tierLimits: config.TENANTRY_TIER_LIMITS }) },
        { service: ClusterService, impl: clusterService(orm, clusters) },
      ],
      interceptors: [],
      credentials,
      ...listenerOptions(config),
      log,
      onShutdown: closeAll,
    });
    void provisioner.resumeUnfinished().catch((error: unknown) => log.error({ err: error }, "could not resume unfinished tenants"));
    return meshServer;
  } catch (error) {
    await closeAll();
    throw error;
  }
}
