import { Code, ConnectError } from "@connectrpc/connect";
import type { EntityManager, MikroORM } from "@mikro-orm/postgresql";
import pg from "pg";
import { randomUUID } from "node:crypto";
import { buffer } from "node:stream/consumers";
import { checkTextLine, isDatabaseUnreachable, type Logger, type SecretBox } from "../../mesh/index.ts";
import { lockForTransaction, type AdvisoryLocks } from "../advisory-locks.ts";
import type { ClusterRegistry } from "../cluster-registry.ts";
import type { Backup } from "../entities/backup.ts";
import type { Tenant } from "../entities/tenant.ts";
import {
  backupStates,
  changeBackup,
  deleteBackupRecord,
  deleteUnusedBackup,
  findRunningBackups,
  findTenant,
  getBackup,
  getTenant,
  insertBackup,
  listBackups,
  restoreUnderWay,
  rolePasswordContext,
  servedStatuses,
  statusNames,
  findPoolDatabase,
  placementNames,
  poolPasswordContext,
} from "../stores/index.ts";
import type { BackupEvents } from "./backup-events.ts";
import type { BackupManifest } from "./backup-manifest.ts";
import { manifestFile, newDataKey, openManifest, type DataKey } from "./backup-envelope.ts";
import type { BackupKey, BackupStorage } from "./backup-storage.ts";
import { tableRecord, takeBackup, type BackupStep } from "./tenant-backup.ts";
import { SchemaNames } from "./tenant-catalog.ts";

/** Options of {@link TenantBackups}. */
export interface TenantBackupsOptions {
  orm: MikroORM;
  clusters: ClusterRegistry;
  locks: AdvisoryLocks;
  box: SecretBox;
  storage: BackupStorage;
  /** The service schemas backed up: those of the data-owning services. */
  schemas: () => string[];
  /** Connections that read tables at once, per backup, each on a thread of its own. */
  workers: number;
  /** Table data a backup reads per second, its workers together; 0 for no limit. */
  maxBytesPerSecond?: number;
  log: Logger;
  /** Told as each backup ends. */
  events: BackupEvents;
  /** Called when a backup's step is done (for tests). */
  afterStep?: (backupId: string, step: BackupStep) => void | Promise<void>;
}

/** How a backup is taken, besides on request. */
export interface BackupTaking {
  /** Its id, chosen beforehand (offboarding records it first); by default a new one. */
  id?: string;
  /** The slot of the schedule it is taken for. */
  scheduledFor?: Date;
  /** Offboarding's final backup: the tenant is OFFBOARDING, its login not yet revoked. */
  final?: boolean;
  /**
   * Called once the request is found good, just before the backup is
   * recorded: what it throws (a rate limit's refusal) refuses the backup,
   * and a request refused for what it asked is never counted.
   */
  admit?: () => void;
}

/**
 * Backups of tenants: taking them (see {@link takeBackup}), with their
 * progress in the registry, listing, reading and deleting them. A backup
 * of a Platform that stopped while taking it is FAILED and its files
 * removed when Platform next sweeps.
 */
export class TenantBackups {
  readonly #options: TenantBackupsOptions;
  /** Backups this process is taking: the sweep leaves them be. */
  readonly #running = new Set<string>();

  constructor(options: TenantBackupsOptions) {
    this.#options = options;
  }

  get storage(): BackupStorage {
    return this.#options.storage;
  }

  /**
   * Takes a backup of an ACTIVE or SUSPENDED tenant (OFFBOARDING for a
   * final one) and returns it once stored. A failure leaves the backup
   * FAILED with the reason, nothing of it in storage, and is thrown.
   */
  async create(tenantId: string, label: string, taking: BackupTaking = {}): Promise<Backup> {
    const { orm, clusters, locks, box, storage, events, log } = this.#options;
    label = checkTextLine(label, "label", 200);
    const em = orm.em.fork();
    const tenant = await getTenant(em, tenantId);
    const statuses = taking.final === true ? [statusNames.offboarding] : servedStatuses;
    if (!statuses.includes(tenant.status) || tenant.cluster == null || tenant.role == null) {
      const which = taking.final === true ? "only an OFFBOARDING tenant has a final backup" : "only an ACTIVE or SUSPENDED tenant can be backed up";
      throw new ConnectError(`tenant "${tenant.id}" is ${tenant.status}: ${which}`, Code.FailedPrecondition);
    }
    const id = taking.id ?? randomUUID();
    const key = { tenantId: tenant.id, backupId: id };
    this.#running.add(id);
    try {
      // Held before the record is, so that another Platform never takes it for abandoned.
      await locks.tryLock(lockOf(id));
      await em.transactional(async (tx) => {
        // One backup of a tenant at a time, across Platforms: the check and the record under one lock.
        // Offboarding's final backup is taken whatever else runs: a backup under way must not hold it up.
        await lockForTransaction(tx, `backup:${tenant.id}`);
        for (const running of taking.final === true ? [] : await findRunningBackups(tx, tenant.id)) {
          if (!(await this.#failIfAbandoned(running))) {
            throw new ConnectError(`backup "${running.id}" of tenant "${tenant.id}" is being taken; wait for it to end (GetBackup) before taking another`, Code.FailedPrecondition);
          }
        }
        taking.admit?.();
        await insertBackup(tx, { id, tenantId: tenant.id, label, cluster: tenant.cluster!, database: tenant.database, scheduledFor: taking.scheduledFor ?? null });
      });
      const started = Date.now();
      // Workers report tables at once: their records are written one after another, in the order reported.
      let recorded = Promise.resolve();
      const access = await accessOf(em, box, tenant);
      const manifest = await takeBackup({
        key,
        placement: { cluster: tenant.cluster, database: tenant.database, ...(tenant.schemaPrefix === "" ? {} : { schemaPrefix: tenant.schemaPrefix }) },
        connection: { config: await clusters.clientConfig(tenant.cluster, tenant.database, access.login), sessionRole: access.sessionRole },
        schemas: this.#options.schemas(),
        names: new SchemaNames(tenant.schemaPrefix),
        storage,
        dataKey: newDataKey(box, key),
        workers: this.#options.workers,
        maxBytesPerSecond: this.#options.maxBytesPerSecond ?? 0,
        progress: (progress) => (recorded = recorded.then(() => changeBackup(em, id, progress))),
        afterStep: (step) => this.#options.afterStep?.(id, step),
      }).catch(async (failure: unknown) => {
        await recorded.catch(() => undefined);
        await storage.delete(key).catch((cleanup: unknown) => log.error({ err: cleanup, backupId: id }, "could not remove a failed backup's files"));
        const error = await this.#explained(failure, tenant.id, statuses);
        // A registry that cannot be reached leaves it RUNNING, for the sweep to fail; the answer is still the cause.
        await changeBackup(em, id, { state: backupStates.failed, error: reasonOf(error), finishedAt: new Date() }).catch((cause: unknown) =>
          log.error({ err: cause, backupId: id }, "could not record a failed backup"),
        );
        events.backupFailed({ tier: tenant.tier });
        log.warn({ err: failure, tenantId: tenant.id, backupId: id }, "backup failed");
        throw answerOf(error);
      });
      // The workers report progress side by side, so their last reports may land out of order: the manifest has the whole.
      await changeBackup(em, id, {
        state: backupStates.succeeded,
        tables: manifest.tables.map(tableRecord),
        tableCount: manifest.tables.length,
        sizeBytes: manifest.tables.reduce((sum, t) => sum + t.storedBytes, 0),
        finishedAt: new Date(),
      });
      log.info({ tenantId: tenant.id, backupId: id, tables: manifest.tables.length, ms: Date.now() - started }, "backup taken");
      const backup = await getBackup(orm.em.fork(), id);
      events.backupTaken({ tier: tenant.tier, seconds: (Date.now() - started) / 1000, sizeBytes: backup.sizeBytes });
      return backup;
    } finally {
      this.#running.delete(id);
      await locks.unlock(lockOf(id)).catch(() => undefined);
    }
  }

  /** A backup; NOT_FOUND, or INVALID_ARGUMENT for an id that is not a UUID. */
  get(backupId: string): Promise<Backup> {
    return getBackup(this.#options.orm.em.fork(), backupId);
  }

  /** Backups newest first, optionally of one tenant (NOT_FOUND when it was never one), one page at a time. */
  async list(request: { tenantId: string; pageSize: number; pageToken: string }): Promise<{ backups: Backup[]; nextPageToken: string }> {
    const em = this.#options.orm.em.fork();
    const page = await listBackups(em, request);
    // A DELETED tenant's record is kept: only an id that never was a tenant's (a typo) is refused.
    if (request.tenantId !== "" && page.backups.length === 0 && request.pageToken === "") {
      await getTenant(em, request.tenantId);
    }
    return page;
  }

  /** Removes a backup's files and record; FAILED_PRECONDITION while it runs or is being restored. */
  async delete(backupId: string): Promise<Backup> {
    const em = this.#options.orm.em.fork();
    const backup = await getBackup(em, backupId);
    if (backup.state === backupStates.running) {
      throw new ConnectError(`backup "${backup.id}" is still being taken; delete it once it has ended`, Code.FailedPrecondition);
    }
    if (await restoreUnderWay(em, { backupId: backup.id })) {
      throw new ConnectError(`backup "${backup.id}" is being restored or verified; delete it once that has ended`, Code.FailedPrecondition);
    }
    await this.#options.storage.delete(keyOf(backup));
    await deleteBackupRecord(em, backup.id);
    return backup;
  }

  /**
   * Removes an ended backup's files and record unless a restore or drill
   * is using it (then nothing changes); returns whether it did. For
   * retention, which may meet a restore starting: see `deleteUnusedBackup`.
   */
  deleteUnused(backup: Pick<Backup, "id" | "tenantId">): Promise<boolean> {
    return deleteUnusedBackup(this.#options.orm.em.fork(), backup.id, () => this.#options.storage.delete(keyOf(backup)));
  }

  /**
   * The manifest and data key of a SUCCEEDED backup. FAILED_PRECONDITION
   * for a backup that has not succeeded, is missing from storage, or whose
   * manifest does not open (see `openManifest`).
   */
  async open(backup: Backup): Promise<{ manifest: BackupManifest; dataKey: DataKey }> {
    if (backup.state !== backupStates.succeeded) {
      throw new ConnectError(`backup "${backup.id}" is ${backup.state}: only a SUCCEEDED backup can be restored`, Code.FailedPrecondition);
    }
    const key = keyOf(backup);
    const file = await this.#options.storage.get(key, manifestFile).catch((error: NodeJS.ErrnoException) => {
      throw error.code === "ENOENT" ? new ConnectError(`backup "${backup.id}" is missing from storage (${this.#options.storage.description})`, Code.FailedPrecondition) : error;
    });
    return openManifest(this.#options.box, key, await buffer(file));
  }

  /**
   * Marks FAILED the backups left RUNNING by a Platform that stopped (no
   * process holds their lock), and removes their files.
   */
  async failAbandoned(): Promise<void> {
    for (const backup of await findRunningBackups(this.#options.orm.em.fork())) {
      await this.#failIfAbandoned(backup);
    }
  }

  /**
   * What a backup's failure is told as: when the tenant left the statuses
   * it was backed up in meanwhile (offboarding revoked its login and ended
   * its connections), that, rather than how the database refused.
   */
  async #explained(failure: unknown, tenantId: string, statuses: string[]): Promise<unknown> {
    if (failure instanceof ConnectError) {
      return failure;
    }
    const now = await findTenant(this.#options.orm.em.fork(), tenantId).catch(() => null);
    if (now === null || statuses.includes(now.status)) {
      return failure;
    }
    return new ConnectError(`tenant "${tenantId}" became ${now.status} while the backup was being taken, which ended it; its final backup is the one to keep`, Code.FailedPrecondition);
  }

  /** Marks a RUNNING backup FAILED and removes its files if no process is taking it; returns whether it did. */
  async #failIfAbandoned(backup: Backup): Promise<boolean> {
    const { orm, locks, storage, events, log } = this.#options;
    // The lock is a session's: this process holds its own backups' locks, and would take them again.
    if (this.#running.has(backup.id) || !(await locks.tryLock(lockOf(backup.id)))) {
      return false;
    }
    try {
      const em = orm.em.fork();
      await storage.delete(keyOf(backup));
      await changeBackup(em, backup.id, { state: backupStates.failed, error: "Platform stopped while taking it; take another", finishedAt: new Date() });
      events.backupFailed({ tier: (await findTenant(em, backup.tenantId))?.tier ?? "unknown" });
      log.warn({ backupId: backup.id, tenantId: backup.tenantId }, "backup left unfinished by a stopped Platform marked failed");
      return true;
    } finally {
      await locks.unlock(lockOf(backup.id)).catch(() => undefined);
    }
  }
}

/** Where a backup's files are. */
export function keyOf(backup: Pick<Backup, "tenantId" | "id">): BackupKey {
  return { tenantId: backup.tenantId, backupId: backup.id };
}

/** A tenant's role and its password, to connect as. */
export function loginOf(box: SecretBox, tenant: Pick<Tenant, "id" | "role" | "rolePassword">): { user: string; password: string } {
  return { user: tenant.role!, password: box.open(tenant.rolePassword!, rolePasswordContext(tenant.id)) };
}

/**
 * How a tenant's data is reached: the login, and for a pooled tenant the
 * role taken on over its pool database's login (`sessionRole`), which owns
 * its schemas; empty for a dedicated tenant, whose login is its role.
 */
export interface TenantAccess {
  login: { user: string; password: string };
  sessionRole: string;
}

/** How a tenant's data is reached (see {@link TenantAccess}); FAILED_PRECONDITION for a pooled tenant whose pool database is not recorded. */
export async function accessOf(em: EntityManager, box: SecretBox, tenant: Pick<Tenant, "id" | "placement" | "cluster" | "database" | "role" | "rolePassword">): Promise<TenantAccess> {
  if (tenant.placement !== placementNames.pooled) {
    return { login: loginOf(box, tenant), sessionRole: "" };
  }
  const pool = await findPoolDatabase(em, tenant.cluster!, tenant.database);
  if (pool === undefined) {
    throw new ConnectError(`tenant "${tenant.id}" is pooled in "${tenant.database}", which is no pool database of cluster "${tenant.cluster}"`, Code.FailedPrecondition);
  }
  return { login: { user: pool.role, password: box.open(pool.rolePassword, poolPasswordContext(pool.cluster, pool.name)) }, sessionRole: tenant.role! };
}

/**
 * Opens a connection to a database of a cluster as `access` says: a pooled
 * tenant's takes on its role at once (the pool login's search_path is
 * `pg_catalog`: SQL on it names its schemas). The caller ends it.
 */
export async function connectAs(clusters: ClusterRegistry, cluster: string, database: string, access: TenantAccess): Promise<pg.Client> {
  const client = await clusters.connect(cluster, database, access.login);
  if (access.sessionRole !== "") {
    try {
      await client.query(`set role ${pg.escapeIdentifier(access.sessionRole)}`);
    } catch (error) {
      await client.end().catch(() => undefined);
      throw error;
    }
  }
  return client;
}

function lockOf(backupId: string): string {
  return `backup:${backupId}`;
}

/** What a failure is recorded as: the message of a ConnectError, else a pointer to the log. */
export function reasonOf(error: unknown): string {
  if (error instanceof ConnectError) {
    return error.rawMessage;
  }
  return isDatabaseUnreachable(error) ? "the tenant's database could not be reached" : "an internal error; the Platform log has the detail";
}

/** What a failure is answered with: a ConnectError as it is, an unreachable database UNAVAILABLE, anything else INTERNAL. */
export function answerOf(error: unknown): ConnectError {
  if (error instanceof ConnectError) {
    return error;
  }
  return new ConnectError(reasonOf(error), isDatabaseUnreachable(error) ? Code.Unavailable : Code.Internal);
}
