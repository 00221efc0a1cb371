import {
  authKeySets,
  createGrpcJsTransport,
  listenerOptions,
  loadMeshCredentials,
  loadSecret,
  SecretBox,
  startMeshServer,
  UserTokens,
  type Logger,
  type MeshServer,
  type Telemetry,
} from "../mesh/index.ts";
import os from "node:os";
import path from "node:path";
import { AdvisoryLocks } from "./advisory-locks.ts";
import { AuditLog } from "./audit-log.ts";
import { BackupMetrics } from "./backup-metrics.ts";
import { BackupService, backupService } from "./backup-service.ts";
import { Tier } from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import {
  BackupSchedule,
  LocalBackupStorage,
  S3BackupStorage,
  SelfServeBackups,
  TenantBackups,
  TenantRestores,
  type CronSchedule,
  type TenantBackupsOptions,
  type TenantRestoresOptions,
} from "./backups/index.ts";
import { ClusterRegistry } from "./cluster-registry.ts";
import { ClusterService, clusterService } from "./cluster-service.ts";
import { backupRateOf, type PlatformConfig } from "./config.ts";
import { FleetService, fleetService } from "./fleet-service.ts";
import { FleetMigrations } from "./fleet/index.ts";
import { TenantWriteFreezes } from "./freezes/index.ts";
import { TenantLifecycle, type TenantLifecycleOptions } from "./lifecycle/index.ts";
import { observeMoves } from "./move-metrics.ts";
import { MoveService, moveService } from "./move-service.ts";
import { ClusterDrain, ServiceWriteFreeze, SessionWriteFreeze, TenantMoves, TierChangeMoves, type TenantMovesOptions } from "./moves/index.ts";
import { PeriodicSweep } from "./periodic-sweep.ts";
import { observePlatform } from "./platform-metrics.ts";
import { PlatformService, platformService } from "./platform-service.ts";
import { DatabaseStock, ensurePooledSchemas, PooledStock, TemplateDatabases, TenantProvisioner, type TenantProvisionerOptions } from "./provisioning/index.ts";
import { SchemaServices } from "./schema-services.ts";
import { RateLimit } from "./rate-limit.ts";
import { createPlatformOrm, ensurePlatformDatabase, getTenant, migratePlatformDatabase, parseDatabaseUrl, placementNames, recordSchemaService, tierName } from "./stores/index.ts";
import { TenantBackupService, tenantBackupService } from "./tenant-backup-service.ts";
import { TenantChangeFeed } from "./tenant-change-feed.ts";
import { WriteFreezeService, writeFreezeService } from "./write-freeze-service.ts";

const hourMs = 3_600_000;

/** Hooks into a running Platform, for tests. */
export interface PlatformHooks {
  /** See {@link TenantProvisionerOptions.afterStep}. */
  afterStep?: TenantProvisionerOptions["afterStep"];
  /** See {@link TenantLifecycleOptions.afterStep}. */
  afterOffboardingStep?: TenantLifecycleOptions["afterStep"];
  /** See {@link TenantBackupsOptions.afterStep}. */
  afterBackupStep?: TenantBackupsOptions["afterStep"];
  /** See {@link TenantRestoresOptions.afterStep}. */
  afterRestoreStep?: TenantRestoresOptions["afterStep"];
  /** See {@link TenantMovesOptions.afterStep}. */
  afterMoveStep?: TenantMovesOptions["afterStep"];
  /** The time the backup schedule and retention go by, instead of the clock's (so that tests move it). */
  backupClock?: () => Date;
  /** Receives the backup schedule, so that a test can run what is due at once (`runDue`). */
  backupSchedule?: (schedule: BackupSchedule) => void;
}

/** Each tier's backup schedule: its own setting if it has one, else TENANTRY_BACKUP_SCHEDULE; null for none. */
function backupSchedules(config: PlatformConfig): Map<string, CronSchedule | null> {
  const own = {
    [Tier.STANDARD]: config.TENANTRY_BACKUP_SCHEDULE_STANDARD,
    [Tier.PREMIUM]: config.TENANTRY_BACKUP_SCHEDULE_PREMIUM,
    [Tier.ENTERPRISE]: config.TENANTRY_BACKUP_SCHEDULE_ENTERPRISE,
  };
  // "off" is null, which a tier's own setting may say: only an unset one falls back.
  return new Map(Object.entries(own).map(([tier, schedule]) => [tierName(Number(tier) as Tier), schedule === undefined ? config.TENANTRY_BACKUP_SCHEDULE : schedule]));
}

/**
 * Starts Platform: migrates its own database, registers the server of
 * TENANTRY_DATABASE_URL as cluster "default", serves the registry, and
 * resumes the tenants a previous run left half-provisioned.
 */
export async function startPlatform(config: PlatformConfig, log: Logger, telemetry: Telemetry, hooks: PlatformHooks = {}): Promise<MeshServer> {
  await ensurePlatformDatabase(config.TENANTRY_DATABASE_URL);
  const orm = await createPlatformOrm(config.TENANTRY_DATABASE_URL, log);
  const closers: (() => unknown)[] = [() => orm.close()];
  const closeAll = async () => {
    for (const close of closers.reverse()) {
      await close();
    }
  };
  try {
    const applied = await migratePlatformDatabase(orm, config.TENANTRY_DATABASE_URL);
    if (applied.length > 0) {
      log.info({ applied }, "platform database migrated");
    }
    const credentials = await loadMeshCredentials(config, "platform");
    const masterKey = await loadSecret({ value: config.TENANTRY_MASTER_KEY, dataDir: config.TENANTRY_DATA_DIR, file: "master.key", generate: config.TENANTRY_ENV !== "production" });
    const box = new SecretBox(masterKey.value);
    const clusters = new ClusterRegistry({ orm, box, log });
    closers.push(() => clusters.close());
    const { database: platformDatabase, ...server } = parseDatabaseUrl(config.TENANTRY_DATABASE_URL);
    await clusters.registerServer("default", server, {
      capacity: config.TENANTRY_DEFAULT_CLUSTER_CAPACITY,
      poolCapacity: config.TENANTRY_DEFAULT_CLUSTER_POOL_CAPACITY,
      region: config.TENANTRY_DEFAULT_CLUSTER_REGION,
    });
    const schemas = new SchemaServices({
      addresses: config.TENANTRY_SCHEMA_SERVICES,
      credentials,
      record: (service) => recordSchemaService(orm.em.fork(), service),
    });
    closers.push(() => schemas.close());
    const locks = new AdvisoryLocks({ connectionString: config.TENANTRY_DATABASE_URL, log });
    closers.push(() => locks.close());
    const templates = config.TENANTRY_TEMPLATE_DATABASES
      ? new TemplateDatabases({ orm, clusters, schemas, locks, box, name: `${platformDatabase}_template`.slice(0, 63), log })
      : undefined;
    const stock = new DatabaseStock({ orm, clusters, schemas, templates, locks, size: config.TENANTRY_DATABASE_STOCK, owner: platformDatabase, log });
    // Refilled after each provisioning; the sweep builds the stock at start, follows new schema versions and drops what is not wanted.
    const stockSweep = new PeriodicSweep(() => stock.refill(), {
      intervalMs: config.TENANTRY_OFFBOARDING_CHECK_INTERVAL_MS,
      onError: (error) => log.warn({ err: error }, "refilling the database stock failed; the next sweep tries again"),
    });
    closers.push(() => stockSweep.stop());
    closers.push(() => stock.stop());
    const pooledStock = new PooledStock({
      orm,
      clusters,
      schemas,
      locks,
      box,
      size: config.TENANTRY_POOLED_STOCK,
      poolMaxTenants: config.TENANTRY_POOL_MAX_TENANTS,
      migrateTimeoutMs: 60_000,
      log,
    });
    // Refilled after each pooled provisioning; the sweep builds it at start, follows new schema versions and drops what is not wanted.
    const pooledStockSweep = new PeriodicSweep(() => pooledStock.refill(), {
      intervalMs: config.TENANTRY_OFFBOARDING_CHECK_INTERVAL_MS,
      onError: (error) => log.warn({ err: error }, "refilling the pooled stock failed; the next sweep tries again"),
    });
    closers.push(() => pooledStockSweep.stop());
    closers.push(() => pooledStock.stop());
    const provisioner = new TenantProvisioner({
      orm,
      clusters,
      schemas,
      templates,
      stock,
      pooledStock,
      locks,
      box,
      migrateTimeoutMs: 60_000,
      poolMaxTenants: config.TENANTRY_POOL_MAX_TENANTS,
      poolNamePrefix: `${platformDatabase}_pool`,
      tierPlacements: config.TENANTRY_TIER_PLACEMENTS,
      log,
      ...(hooks.afterStep === undefined ? {} : { afterStep: hooks.afterStep }),
    });
    const audit = new AuditLog(orm, log);
    const storage = backupStorage(config);
    if (storage instanceof S3BackupStorage) {
      closers.push(() => storage.close());
    }
    log.info({ storage: storage.description }, "where backups are kept");
    const backupMetrics = new BackupMetrics(telemetry.meter, { orm, log });
    closers.push(() => backupMetrics.stop());
    const backups = new TenantBackups({
      orm,
      clusters,
      locks,
      box,
      storage,
      schemas: () => schemas.entries.map((e) => e.name),
      workers: config.TENANTRY_BACKUP_WORKERS,
      maxBytesPerSecond: backupRateOf(config.TENANTRY_BACKUP_MAX_RATE, os.availableParallelism()),
      log,
      events: backupMetrics,
      ...(hooks.afterBackupStep === undefined ? {} : { afterStep: hooks.afterBackupStep }),
    });
    const restores = new TenantRestores({
      orm,
      clusters,
      schemas,
      box,
      locks,
      storage: backups.storage,
      backups,
      provisioner,
      migrateTimeoutMs: 60_000,
      keepMs: config.TENANTRY_RESTORE_KEEP_MS,
      poolMaxTenants: config.TENANTRY_POOL_MAX_TENANTS,
      poolNamePrefix: `${platformDatabase}_pool`,
      stock,
      templates,
      log,
      events: backupMetrics,
      ...(hooks.afterRestoreStep === undefined ? {} : { afterStep: hooks.afterRestoreStep }),
    });
    const freezes = new TenantWriteFreezes({ orm, leaseMs: config.TENANTRY_FREEZE_LEASE_MS, acknowledgeTimeoutMs: config.TENANTRY_FREEZE_ACK_TIMEOUT_MS, log });
    closers.push(() => freezes.close());
    const moves = new TenantMoves({
      orm,
      clusters,
      schemas,
      box,
      locks,
      audit,
      backups,
      freeze: new ServiceWriteFreeze(freezes, orm),
      fence: new SessionWriteFreeze(clusters),
      migrateTimeoutMs: 60_000,
      keepMs: config.TENANTRY_MOVE_KEEP_MS,
      cutoverTimeoutMs: 30_000,
      copyBytesPerSecond: config.TENANTRY_MOVE_MAX_RATE,
      poolMaxTenants: config.TENANTRY_POOL_MAX_TENANTS,
      poolNamePrefix: `${platformDatabase}_pool`,
      stallMs: 60_000,
      pollMs: 100,
      log,
      ...(hooks.afterMoveStep === undefined ? {} : { afterStep: hooks.afterMoveStep }),
    });
    // Moves under way a stopped Platform left, source databases kept past their time, replication leftovers.
    const moveSweep = new PeriodicSweep(() => moves.sweep(), {
      intervalMs: config.TENANTRY_OFFBOARDING_CHECK_INTERVAL_MS,
      onError: (error) => log.error({ err: error }, "move sweep failed"),
    });
    closers.push(() => moveSweep.stop());
    // Closers run last first: waits of moves under way end, then the sweep waits for what it started.
    closers.push(() => moves.stop());
    const lifecycle = new TenantLifecycle({
      orm,
      clusters,
      locks,
      audit,
      backups,
      graceMs: config.TENANTRY_OFFBOARDING_GRACE_MS,
      checkIntervalMs: config.TENANTRY_OFFBOARDING_CHECK_INTERVAL_MS,
      log,
      ...(hooks.afterOffboardingStep === undefined ? {} : { afterStep: hooks.afterOffboardingStep }),
    });
    closers.push(() => lifecycle.stop());
    const schedule = new BackupSchedule({
      orm,
      locks,
      backups,
      restores,
      schedules: backupSchedules(config),
      windowMs: config.TENANTRY_BACKUP_WINDOW_MS,
      concurrencyPerCluster: config.TENANTRY_BACKUP_CONCURRENCY_PER_CLUSTER,
      verifySample: config.TENANTRY_BACKUP_VERIFY_SAMPLE,
      retention: { keepLast: config.TENANTRY_BACKUP_KEEP_LAST, keepDays: config.TENANTRY_BACKUP_KEEP_DAYS },
      now: hooks.backupClock ?? (() => new Date()),
      log,
    });
    hooks.backupSchedule?.(schedule);
    const scheduleSweep = new PeriodicSweep(async () => void (await schedule.runDue()), {
      intervalMs: config.TENANTRY_OFFBOARDING_CHECK_INTERVAL_MS,
      onError: (error) => log.error({ err: error }, "backup schedule failed"),
    });
    closers.push(() => scheduleSweep.stop());
    // Closers run last first: the schedule stops starting work, then the sweep waits for what it started.
    closers.push(() => schedule.stop());
    // Backups and restores a stopped Platform left under way, and databases kept past their time.
    const backupSweep = new PeriodicSweep(
      async () => {
        await backups.failAbandoned();
        await restores.sweep();
      },
      { intervalMs: config.TENANTRY_OFFBOARDING_CHECK_INTERVAL_MS, onError: (error) => log.error({ err: error }, "backup sweep failed") },
    );
    closers.push(() => backupSweep.stop());
    const selfServe = new SelfServeBackups({
      orm,
      backups,
      restores,
      limits: {
        backups: new RateLimit({ perWindow: config.TENANTRY_TENANT_BACKUPS_PER_HOUR, windowMs: hourMs, refusal: "this tenant has taken all the backups it may take in an hour" }),
        restores: new RateLimit({ perWindow: config.TENANTRY_TENANT_RESTORES_PER_HOUR, windowMs: hourMs, refusal: "this tenant has started all the restores it may start in an hour" }),
        downloads: new RateLimit({ perWindow: config.TENANTRY_TENANT_DOWNLOADS_PER_HOUR, windowMs: hourMs, refusal: "this tenant has started all the downloads it may start in an hour" }),
      },
    });
    // Users' tokens on Platform's tenant methods are checked as every service checks them: against
    // the tenant's keys from Auth (which resolves the tenant here), never by calling Auth per request.
    const authTransport = schemas.auth === undefined ? undefined : createGrpcJsTransport({ address: schemas.auth.address, waitForReady: true });
    closers.push(() => authTransport?.close());
    const userTokens =
      authTransport === undefined ? undefined : new UserTokens({ fetchKeySet: authKeySets(authTransport), issuer: config.TENANTRY_TOKEN_ISSUER, timeoutMs: 11_000 });
    const feed = new TenantChangeFeed({ connectionString: config.TENANTRY_DATABASE_URL, log });
    closers.push(() => feed.close());
    const fleet = new FleetMigrations({
      orm,
      schemas,
      migrateTimeoutMs: 60_000,
      log,
      poolConcurrency: config.TENANTRY_FLEET_POOL_CONCURRENCY,
      pooledConcurrency: config.TENANTRY_FLEET_POOLED_CONCURRENCY,
      // A pooled tenant's role may not create schemas: Platform makes the schema of a service added since.
      prepare: async (tenantId, service) => {
        const tenant = await getTenant(orm.em.fork(), tenantId);
        if (tenant.placement === placementNames.pooled && tenant.database !== "") {
          await ensurePooledSchemas(clusters, tenant, [service]);
        }
      },
    });
    closers.push(observePlatform(telemetry.meter, { orm, fleet, log }));
    closers.push(observeMoves(telemetry.meter, { orm, clusters, log }));
    const meshServer = await startMeshServer({
      name: "platform",
      services: [
        {
          service: PlatformService,
          impl: platformService({
            orm,
            clusters,
            provisioner,
            lifecycle,
            audit,
            feed,
            freezes,
            box,
            tierLimits: config.TENANTRY_TIER_LIMITS,
            tierChangeMoves: new TierChangeMoves({ moves, tierPlacements: config.TENANTRY_TIER_PLACEMENTS, enabled: config.TENANTRY_TIER_CHANGE_MOVES, log }),
            signUps: new RateLimit({ perWindow: config.TENANTRY_SIGNUP_LIMIT_PER_HOUR, windowMs: hourMs, refusal: "too many sign-ups from this address" }),
          }),
        },
        { service: ClusterService, impl: clusterService(orm, clusters, audit) },
        { service: FleetService, impl: fleetService(fleet) },
        { service: BackupService, impl: backupService(backups, restores, audit) },
        { service: TenantBackupService, impl: tenantBackupService(selfServe, audit) },
        { service: WriteFreezeService, impl: writeFreezeService(freezes, audit) },
        { service: MoveService, impl: moveService(moves, new ClusterDrain({ orm, moves, clusters, log, onDraining: () => stock.refillInBackground() }), audit) },
      ],
      interceptors: [],
      credentials,
      ...(userTokens === undefined ? {} : { userTokens }),
      ...listenerOptions(config),
      log,
      telemetry,
      onDrain: () => feed.close(),
      onShutdown: closeAll,
    });
    lifecycle.start();
    backupSweep.start();
    scheduleSweep.start();
    moveSweep.start();
    stockSweep.start();
    pooledStockSweep.start();
    const resuming = provisioner.resumeUnfinished().catch((error: unknown) => log.error({ err: error }, "could not resume unfinished tenants"));
    closers.push(() => resuming);
    return meshServer;
  } catch (error) {
    await closeAll();
    throw error;
  }
}

/** Where backups are kept: the S3 bucket of TENANTRY_BACKUP_S3_BUCKET when set, else `<data dir>/backups`. */
function backupStorage(config: PlatformConfig): LocalBackupStorage | S3BackupStorage {
  if (config.TENANTRY_BACKUP_S3_BUCKET === undefined) {
    return new LocalBackupStorage(path.resolve(config.TENANTRY_DATA_DIR, "backups"));
  }
  const accessKeyId = config.TENANTRY_BACKUP_S3_ACCESS_KEY_ID;
  const secretAccessKey = config.TENANTRY_BACKUP_S3_SECRET_ACCESS_KEY;
  return new S3BackupStorage({
    bucket: config.TENANTRY_BACKUP_S3_BUCKET,
    // readPlatformConfig refuses a bucket without its region.
    region: config.TENANTRY_BACKUP_S3_REGION!,
    ...(config.TENANTRY_BACKUP_S3_ENDPOINT === undefined ? {} : { endpoint: config.TENANTRY_BACKUP_S3_ENDPOINT }),
    forcePathStyle: config.TENANTRY_BACKUP_S3_FORCE_PATH_STYLE,
    ...(accessKeyId === undefined || secretAccessKey === undefined ? {} : { credentials: { accessKeyId, secretAccessKey } }),
    prefix: config.TENANTRY_BACKUP_S3_PREFIX,
  });
}
