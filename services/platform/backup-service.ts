import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { BackupService, type BackupSchema, type RestoreSchema } from "../../gen/tenantry/platform/v1/backup_service_pb.js";
import { Tier } from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import type { AuditLog } from "./audit-log.ts";
import type { TenantBackups, TenantRestores } from "./backups/index.ts";
import type { Backup } from "./entities/backup.ts";
import type { Restore } from "./entities/restore.ts";
import { backupStateOf, restoreKindOf, restoreStateOf, verifyResultOf } from "./stores/index.ts";
import { tenantMessage } from "./tenant-messages.ts";

export { BackupService };

/** A backup's record as the API's Backup message. */
function backupMessage(backup: Backup): MessageInitShape<typeof BackupSchema> {
  return {
    backupId: backup.id,
    tenantId: backup.tenantId,
    label: backup.label,
    state: backupStateOf(backup.state),
    failureReason: backup.error ?? "",
    createTime: timestampFromDate(backup.createdAt),
    ...(backup.finishedAt == null ? {} : { finishTime: timestampFromDate(backup.finishedAt) }),
    sizeBytes: BigInt(backup.sizeBytes),
    tables: backup.tables.map((t) => ({ name: t.name, rows: BigInt(t.rows), sha256: t.sha256 })),
    tableCount: backup.tableCount,
    schemaVersions: Object.entries(backup.schemaVersions).map(([service, version]) => ({ service, version })),
    ...(backup.verifiedAt == null ? {} : { verifyTime: timestampFromDate(backup.verifiedAt) }),
    verifyResult: verifyResultOf(backup.verifyResult ?? ""),
    verifyError: backup.verifyError ?? "",
    database: backup.database,
    cluster: backup.cluster,
    ...(backup.scheduledFor == null ? {} : { scheduledTime: timestampFromDate(backup.scheduledFor) }),
  };
}

/** A restore's record as the API's Restore message. */
function restoreMessage(restore: Restore): MessageInitShape<typeof RestoreSchema> {
  return {
    restoreId: restore.id,
    backupId: restore.backupId,
    tenantId: restore.tenantId,
    kind: restoreKindOf(restore.kind),
    state: restoreStateOf(restore.state),
    error: restore.error ?? "",
    database: restore.database,
    previousDatabase: restore.previousDatabase ?? "",
    ...(restore.keepUntil == null ? {} : { undoDeadline: timestampFromDate(restore.keepUntil) }),
    createTime: timestampFromDate(restore.createdAt),
    ...(restore.finishedAt == null ? {} : { finishTime: timestampFromDate(restore.finishedAt) }),
  };
}

/** `tenantry.platform.v1.BackupService` over the backups and restores; every call is audited. */
export function backupService(backups: TenantBackups, restores: TenantRestores, audit: AuditLog): ServiceImpl<typeof BackupService> {
  return {
    async createBackup(req, ctx) {
      const backup = await audit.audited(ctx, req.tenantId, { label: req.label }, () => backups.create(req.tenantId, req.label));
      return { backup: backupMessage(backup) };
    },
    async getBackup(req, ctx) {
      return { backup: backupMessage(await audit.audited(ctx, undefined, { backupId: req.backupId }, () => backups.get(req.backupId))) };
    },
    async listBackups(req, ctx) {
      const page = await audit.audited(ctx, req.tenantId === "" ? undefined : req.tenantId, {}, () => backups.list(req));
      return { backups: page.backups.map(backupMessage), nextPageToken: page.nextPageToken };
    },
    async deleteBackup(req, ctx) {
      await audit.audited(ctx, undefined, { backupId: req.backupId }, () => backups.delete(req.backupId));
      return {};
    },
    async restoreBackup(req, ctx) {
      const detail = { backupId: req.backupId, targetTenantId: req.targetTenantId, tier: Tier[req.tier] };
      const { restore, tenant } = await audit.audited(ctx, req.targetTenantId === "" ? undefined : req.targetTenantId, detail, () => restores.restore(req));
      return { restore: restoreMessage(restore), tenant: tenantMessage(tenant) };
    },
    async undoRestore(req, ctx) {
      const { restore, tenant } = await audit.audited(ctx, req.tenantId, {}, () => restores.undo(req.tenantId));
      return { restore: restoreMessage(restore), tenant: tenantMessage(tenant) };
    },
    async verifyBackup(req, ctx) {
      return { backup: backupMessage(await audit.audited(ctx, undefined, { backupId: req.backupId }, () => restores.verify(req.backupId))) };
    },
  };
}
