import { Code, ConnectError } from "@connectrpc/connect";
import type { MikroORM } from "@mikro-orm/postgresql";
import type { Backup } from "../entities/backup.ts";
import type { Restore } from "../entities/restore.ts";
import type { RateLimit } from "../rate-limit.ts";
import { backupStates, getTenant, statusNames } from "../stores/index.ts";
import { downloadBackup } from "./backup-download.ts";
import { keyOf, type TenantBackups } from "./tenant-backups.ts";
import type { TenantRestores } from "./tenant-restores.ts";

/** Options of {@link SelfServeBackups}. */
export interface SelfServeBackupsOptions {
  orm: MikroORM;
  backups: TenantBackups;
  restores: TenantRestores;
  /** Per tenant: backups taken, restores and undos, and downloads. */
  limits: { backups: RateLimit; restores: RateLimit; downloads: RateLimit };
}

/**
 * A tenant's own backups, as its users manage them: every method acts on
 * the tenant it is given (the caller's, never one from a request), which
 * must be ACTIVE; another tenant's backup is NOT_FOUND, exactly as an
 * unknown one; taking, restoring (and undoing) and downloading are limited
 * per tenant, counting only what is started (a request refused for what it
 * asked is not counted). The work itself is the operators' engine:
 * {@link TenantBackups} and {@link TenantRestores}.
 */
export class SelfServeBackups {
  readonly #options: SelfServeBackupsOptions;

  constructor(options: SelfServeBackupsOptions) {
    this.#options = options;
  }

  /** Takes a backup of the tenant; see {@link TenantBackups.create}. */
  async create(tenantId: string, label: string): Promise<Backup> {
    await this.#checkActive(tenantId);
    return this.#options.backups.create(tenantId, label, { admit: () => this.#options.limits.backups.take(tenantId) });
  }

  /** One of the tenant's backups. */
  async get(tenantId: string, backupId: string): Promise<Backup> {
    await this.#checkActive(tenantId);
    return this.#own(tenantId, backupId);
  }

  /** The tenant's backups, newest first, a page at a time. */
  async list(tenantId: string, page: { pageSize: number; pageToken: string }): Promise<{ backups: Backup[]; nextPageToken: string }> {
    await this.#checkActive(tenantId);
    return this.#options.backups.list({ tenantId, ...page });
  }

  /** Restores one of the tenant's backups in place; see {@link TenantRestores.restore}. */
  async restore(tenantId: string, backupId: string): Promise<Restore> {
    await this.#checkActive(tenantId);
    const backup = await this.#own(tenantId, backupId);
    const admit = () => this.#options.limits.restores.take(tenantId);
    const { restore } = await this.#options.restores.restore({ backupId: backup.id, targetTenantId: "", tier: 0, displayName: "", admit });
    return restore;
  }

  /** Undoes the tenant's last in-place restore; see {@link TenantRestores.undo}. */
  async undo(tenantId: string): Promise<Restore> {
    await this.#checkActive(tenantId);
    const { restore } = await this.#options.restores.undo(tenantId, () => this.#options.limits.restores.take(tenantId));
    return restore;
  }

  /**
   * One of the tenant's SUCCEEDED backups as a download (see
   * `downloadBackup`): its size, and its bytes as they are read.
   */
  async download(tenantId: string, backupId: string): Promise<ReturnType<typeof downloadBackup>> {
    await this.#checkActive(tenantId);
    const backup = await this.#own(tenantId, backupId);
    if (backup.state !== backupStates.succeeded) {
      throw new ConnectError(`backup "${backup.id}" is ${backup.state}: only a SUCCEEDED backup can be downloaded`, Code.FailedPrecondition);
    }
    this.#options.limits.downloads.take(tenantId);
    const { manifest, dataKey } = await this.#options.backups.open(backup);
    return downloadBackup({ key: keyOf(backup), manifest, dataKey, storage: this.#options.backups.storage });
  }

  /** The backup, if it is the tenant's; NOT_FOUND for another tenant's as for an unknown one. */
  async #own(tenantId: string, backupId: string): Promise<Backup> {
    const backup = await this.#options.backups.get(backupId).catch((error: unknown) => {
      if (ConnectError.from(error).code === Code.NotFound) {
        return undefined;
      }
      throw error;
    });
    if (backup === undefined || backup.tenantId !== tenantId) {
      throw new ConnectError(`backup "${backupId}" not found`, Code.NotFound);
    }
    return backup;
  }

  async #checkActive(tenantId: string): Promise<void> {
    const tenant = await getTenant(this.#options.orm.em.fork(), tenantId);
    if (tenant.status !== statusNames.active) {
      throw new ConnectError(`tenant "${tenant.id}" is ${tenant.status}: its backups can be managed only while it is ACTIVE`, Code.FailedPrecondition);
    }
  }
}
