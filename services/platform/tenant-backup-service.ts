import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { TenantBackupService, type BackupSchema, type RestoreSchema } from "../../gen/tenantry/selfserve/v1/tenant_backup_service_pb.js";
import { kUser } from "../mesh/index.ts";
import type { AuditLog } from "./audit-log.ts";
import type { SelfServeBackups } from "./backups/index.ts";
import type { Backup } from "./entities/backup.ts";
import type { Restore } from "./entities/restore.ts";
import { backupStateOf, restoreStateOf, verifyResultOf } from "./stores/index.ts";

export { TenantBackupService };

/** The most bytes one message of a download carries. */
const chunkBytes = 64 * 1024;

/** A backup's record as a tenant sees it: without where it is kept or was read from. */
function backupMessage(backup: Backup): MessageInitShape<typeof BackupSchema> {
  return {
    backupId: backup.id,
    label: backup.label,
    state: backupStateOf(backup.state),
    failureReason: backup.error ?? "",
    createTime: timestampFromDate(backup.createdAt),
    ...(backup.finishedAt == null ? {} : { finishTime: timestampFromDate(backup.finishedAt) }),
    sizeBytes: BigInt(backup.sizeBytes),
    tables: backup.tables.map((t) => ({ name: t.name, rows: BigInt(t.rows), sha256: t.sha256 })),
    schemaVersions: Object.entries(backup.schemaVersions).map(([service, version]) => ({ service, version })),
    ...(backup.verifiedAt == null ? {} : { verifyTime: timestampFromDate(backup.verifiedAt) }),
    verifyResult: verifyResultOf(backup.verifyResult ?? ""),
  };
}

/** An in-place restore's record as the tenant sees it. */
function restoreMessage(restore: Restore): MessageInitShape<typeof RestoreSchema> {
  return {
    restoreId: restore.id,
    backupId: restore.backupId,
    state: restoreStateOf(restore.state),
    ...(restore.keepUntil == null ? {} : { undoDeadline: timestampFromDate(restore.keepUntil) }),
    createTime: timestampFromDate(restore.createdAt),
    ...(restore.finishedAt == null ? {} : { finishTime: timestampFromDate(restore.finishedAt) }),
  };
}

/** The tenant of a call: the one the caller's verified token is for (the access interceptor checked it names x-tenant-id). */
function tenantOf(ctx: HandlerContext): string {
  return ctx.values.get(kUser)!.tenantId;
}

/** `tenantry.selfserve.v1.TenantBackupService`: the caller's tenant's backups; every call is audited with the user as actor. */
export function tenantBackupService(selfServe: SelfServeBackups, audit: AuditLog): ServiceImpl<typeof TenantBackupService> {
  return {
    async createBackup(req, ctx) {
      const tenantId = tenantOf(ctx);
      return { backup: backupMessage(await audit.audited(ctx, tenantId, { label: req.label }, () => selfServe.create(tenantId, req.label))) };
    },
    async getBackup(req, ctx) {
      const tenantId = tenantOf(ctx);
      return { backup: backupMessage(await audit.audited(ctx, tenantId, { backupId: req.backupId }, () => selfServe.get(tenantId, req.backupId))) };
    },
    async listBackups(req, ctx) {
      const tenantId = tenantOf(ctx);
      const page = await audit.audited(ctx, tenantId, {}, () => selfServe.list(tenantId, req));
      return { backups: page.backups.map(backupMessage), nextPageToken: page.nextPageToken };
    },
    async restoreBackup(req, ctx) {
      const tenantId = tenantOf(ctx);
      return { restore: restoreMessage(await audit.audited(ctx, tenantId, { backupId: req.backupId }, () => selfServe.restore(tenantId, req.backupId))) };
    },
    async undoRestore(_req, ctx) {
      const tenantId = tenantOf(ctx);
      return { restore: restoreMessage(await audit.audited(ctx, tenantId, {}, () => selfServe.undo(tenantId))) };
    },
    async *downloadBackup(req, ctx) {
      const tenantId = tenantOf(ctx);
      // Audited as it starts: who took which backup's data away.
      const download = await audit.audited(ctx, tenantId, { backupId: req.backupId }, () => selfServe.download(tenantId, req.backupId));
      let first = true;
      for await (const chunk of inChunks(download.bytes(), chunkBytes)) {
        yield { chunk, totalBytes: first ? BigInt(download.size) : 0n };
        first = false;
      }
    },
  };
}

/** `source` again in chunks of `size` bytes, the last one shorter: the archive comes in pieces of any size, down to a tar header. */
async function* inChunks(source: AsyncIterable<Buffer>, size: number): AsyncGenerator<Buffer> {
  let held: Buffer[] = [];
  let heldBytes = 0;
  for await (const piece of source) {
    held.push(piece);
    heldBytes += piece.length;
    if (heldBytes >= size) {
      const bytes = Buffer.concat(held, heldBytes);
      let at = 0;
      for (; bytes.length - at >= size; at += size) {
        yield bytes.subarray(at, at + size);
      }
      held = [bytes.subarray(at)];
      heldBytes = bytes.length - at;
    }
  }
  if (heldBytes > 0) {
    yield Buffer.concat(held, heldBytes);
  }
}
