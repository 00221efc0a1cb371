import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { Option, type Command } from "commander";
import { setTimeout as sleep } from "node:timers/promises";
import {
  BackupState,
  CreateBackupResponseSchema,
  DeleteBackupResponseSchema,
  GetBackupResponseSchema,
  ListBackupsResponseSchema,
  RestoreBackupResponseSchema,
  RestoreKind,
  RestoreState,
  UndoRestoreResponseSchema,
  VerifyBackupResponseSchema,
  VerifyResult,
  type Backup,
  type BackupService,
  type Restore,
} from "../../gen/tenantry/platform/v1/backup_service_pb.js";
import { Placement, TenantStatus, Tier, type Tenant } from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import { BackupProgress, rowsOf } from "./backup-progress.ts";
import { ExitCode } from "./exit-codes.ts";
import { tierNames, tierOf } from "./option-parsers.ts";
import { byteLabel, durationLabel, enumLabel, timeLabel, type Output } from "./output.ts";
import { withPlatform, type PlatformSession } from "./platform-session.ts";

/** Options of `backups restore`. */
interface RestoreOptions {
  to?: string;
  tier?: string;
  name?: string;
  placement?: string;
}

/** The most backups ListBackups returns in one page. */
const pageSize = 500;

/** How often a backup being taken is read for its progress. */
const pollMs = 250;

/** Adds `backups create|list|get|delete|restore|undo|verify`. */
export function addBackupsCommand(program: Command): void {
  const backups = program
    .command("backups")
    .description("back tenants up, verify backups by restoring them into a scratch database, restore them in place or as a new tenant");

  backups
    .command("create")
    .description(
      "back a tenant up: every table of every service's schema, read in one snapshot while the tenant is served; " +
        "a progress bar on a terminal, else one line naming the backup (no deadline unless --timeout)",
    )
    .argument("<tenant>", "the tenant's id")
    .option("--label <text>", "what to call it, up to 200 characters")
    .action((tenantId: string, options: { label?: string }, command: Command) =>
      withPlatform(command, async (session) => {
        const response = await createWithProgress(session, tenantId, options.label ?? "");
        if (response !== undefined) {
          session.output.result(CreateBackupResponseSchema, response, () => printBackup(session.output, response.backup));
        }
      }),
    );

  backups
    .command("list")
    .description("list backups, newest first: every tenant's, or one tenant's")
    .argument("[tenant]", "only this tenant's backups")
    .action((tenantId: string | undefined, _options: object, command: Command) =>
      withPlatform(command, async ({ backups, output, call }) => {
        const all: Backup[] = [];
        let pageToken = "";
        do {
          const page = await backups.listBackups({ tenantId: tenantId ?? "", pageSize, pageToken }, call);
          all.push(...page.backups);
          pageToken = page.nextPageToken;
        } while (pageToken !== "");
        output.result(ListBackupsResponseSchema, create(ListBackupsResponseSchema, { backups: all }), () =>
          output.table(
            ["ID", "TENANT", "STATE", "CREATED", "SIZE", "TABLES", "ROWS", "VERIFIED", "LABEL"],
            all.map((b) => [b.backupId, b.tenantId, enumLabel(BackupState, b.state), timeLabel(b.createTime), byteLabel(b.sizeBytes), tablesLabel(b), String(rowsOf(b)), verifiedLabel(b), b.label]),
            "no backups",
          ),
        );
      }),
    );

  backups
    .command("get")
    .description("show one backup, with its tables' rows and SHA-256 digests (how far it has come while it runs)")
    .argument("<backup-id>", "the backup's id")
    .action((backupId: string, _options: object, command: Command) =>
      withPlatform(command, async ({ backups, output, call }) => {
        const response = await backups.getBackup({ backupId }, call);
        output.result(GetBackupResponseSchema, response, () => {
          printBackup(output, response.backup);
          const tables = response.backup?.tables ?? [];
          if (tables.length > 0) {
            output.line("");
            output.table(["TABLE", "ROWS", "SHA-256"], tables.map((t) => [t.name, String(t.rows), t.sha256]), "");
          }
        });
      }),
    );

  backups
    .command("delete")
    .description("remove a backup from storage and from the list")
    .argument("<backup-id>", "the backup's id")
    .action((backupId: string, _options: object, command: Command) =>
      withPlatform(command, async ({ backups, output, call }) => {
        const response = await backups.deleteBackup({ backupId }, call);
        output.result(DeleteBackupResponseSchema, response, () => output.line(`deleted backup ${backupId}`));
      }),
    );

  backups
    .command("restore")
    .description(
      "restore a backup in place (the tenant switched to the restored database, the one it replaces kept for `backups undo`), " +
        "or with --to as a new tenant with its own database, users and roles included (no deadline unless --timeout)",
    )
    .argument("<backup-id>", "the backup's id")
    .option("--to <tenant>", "make a new tenant of this id (a clone) instead of restoring in place")
    .addOption(new Option("--tier <tier>", "the clone's plan (default: the source's)").choices(tierNames))
    .option("--name <name>", "the clone's display name (default: its id)")
    .addOption(
      new Option("--placement <placement>", "the clone's placement: a database of its own (dedicated) or schemas in a pool database (pooled); default: the source's, or its tier's for another tier").choices([
        "dedicated",
        "pooled",
      ]),
    )
    .action((backupId: string, options: RestoreOptions, command: Command) =>
      withPlatform(command, async ({ backups, output, longCall }) => {
        if (options.to === undefined && (options.tier !== undefined || options.name !== undefined || options.placement !== undefined)) {
          throw new ConnectError("--tier, --name and --placement are for a clone: name it with --to", Code.InvalidArgument);
        }
        const response = await backups.restoreBackup(
          {
            backupId,
            targetTenantId: options.to ?? "",
            tier: options.tier === undefined ? Tier.UNSPECIFIED : tierOf(options.tier),
            displayName: options.name ?? "",
            placement: options.placement === undefined ? Placement.UNSPECIFIED : options.placement === "pooled" ? Placement.POOLED : Placement.DEDICATED,
          },
          longCall,
        );
        output.result(RestoreBackupResponseSchema, response, () => printRestore(output, response.restore, response.tenant));
      }),
    );

  backups
    .command("undo")
    .description("switch a tenant back to the database its last in-place restore replaced, while that is kept, and drop the restored one")
    .argument("<tenant>", "the tenant's id")
    .action((tenantId: string, _options: object, command: Command) =>
      withPlatform(command, async ({ backups, output, longCall }) => {
        const response = await backups.undoRestore({ tenantId }, longCall);
        output.result(UndoRestoreResponseSchema, response, () => printRestore(output, response.restore, response.tenant));
      }),
    );

  backups
    .command("verify")
    .description(
      "restore a backup into a scratch database and compare every table with it, recording the result on the backup " +
        "(exit code 1 when it fails; no deadline unless --timeout)",
    )
    .argument("<backup-id>", "the backup's id")
    .action((backupId: string, _options: object, command: Command) =>
      withPlatform(command, async ({ backups, output, longCall }) => {
        const response = await backups.verifyBackup({ backupId }, longCall);
        output.result(VerifyBackupResponseSchema, response, () => printBackup(output, response.backup));
        if (response.backup?.verifyResult === VerifyResult.FAILED) {
          process.exitCode = ExitCode.Failure;
        }
      }),
    );
}

/**
 * Calls CreateBackup and, while it runs, reads the tenant's new RUNNING
 * backup for its progress. Returns the answer, or undefined when
 * interrupted (Ctrl-C), which leaves the backup going on in Platform.
 */
async function createWithProgress(session: PlatformSession, tenantId: string, label: string) {
  const { backups, output, longCall } = session;
  const live = process.stderr.isTTY === true;
  // With --json, stderr carries only an error's JSON; a terminal still gets its bar.
  const progress = live || !output.json ? new BackupProgress({ stream: process.stderr, live, tenantId }) : undefined;
  // The tenant's backups running already are not this one.
  const known = progress === undefined ? new Set<string>() : await runningBackupIds(backups, tenantId).catch(() => new Set<string>());
  const interrupted = new AbortController();
  const interrupt = () => interrupted.abort();
  process.once("SIGINT", interrupt);
  const watching = new AbortController();
  const watch = progress === undefined ? Promise.resolve() : watchProgress({ backups, tenantId, label: label.trim(), known, progress, signal: watching.signal });
  try {
    const response = await backups.createBackup({ tenantId, label }, { ...longCall, signal: interrupted.signal });
    watching.abort();
    await watch;
    if (response.backup !== undefined) {
      progress?.update(response.backup);
    }
    return response;
  } catch (error) {
    watching.abort();
    await watch;
    progress?.stop();
    const backupId = progress?.backupId;
    const where = backupId === undefined ? `tenantry backups list ${tenantId}` : `tenantry backups get ${backupId}`;
    if (interrupted.signal.aborted) {
      output.note(`interrupted; the backup goes on in Platform: ${where}`);
      process.exitCode = ExitCode.Interrupted;
      return undefined;
    }
    if (ConnectError.from(error).code === Code.DeadlineExceeded && !output.json) {
      output.note(`the deadline passed; the backup goes on in Platform: ${where}`);
    }
    throw error;
  } finally {
    process.off("SIGINT", interrupt);
    progress?.stop();
  }
}

/** The ids of the tenant's backups now RUNNING. */
async function runningBackupIds(backups: Client<typeof BackupService>, tenantId: string): Promise<Set<string>> {
  const page = await backups.listBackups({ tenantId, pageSize: 50 }, { timeoutMs: pollMs * 20 });
  return new Set(page.backups.filter((b) => b.state === BackupState.RUNNING).map((b) => b.backupId));
}

/** What {@link watchProgress} reads and shows. */
interface ProgressWatch {
  backups: Client<typeof BackupService>;
  tenantId: string;
  /** The label as Platform records it (trimmed). */
  label: string;
  known: Set<string>;
  progress: BackupProgress;
  /** Ends the watch. */
  signal: AbortSignal;
}

/**
 * Finds the backup CreateBackup started (the tenant's first RUNNING one
 * with its label that was not running before) and shows it as it goes,
 * until the signal ends the watch. Failures to read are left to the
 * CreateBackup call, whose answer is what counts.
 */
async function watchProgress(watch: ProgressWatch): Promise<void> {
  const { backups, progress, signal } = watch;
  const options = { signal, timeoutMs: pollMs * 20 };
  while (progress.wantsUpdates) {
    try {
      await sleep(pollMs, undefined, { signal });
    } catch {
      return;
    }
    try {
      let backup: Backup | undefined;
      if (progress.backupId === undefined) {
        const page = await backups.listBackups({ tenantId: watch.tenantId, pageSize: 50 }, options);
        // Newest first: the last one started after the call is the earliest, ours.
        backup = page.backups.filter((b) => b.state === BackupState.RUNNING && b.label === watch.label && !watch.known.has(b.backupId)).at(-1);
      } else {
        backup = (await backups.getBackup({ backupId: progress.backupId }, options)).backup;
      }
      if (backup !== undefined && !signal.aborted) {
        progress.update(backup);
      }
    } catch {
      // Progress only: the next read may do better.
    }
  }
}

/** "3/7" while a backup runs, else the tables it holds. */
function tablesLabel(backup: Backup): string {
  return backup.state === BackupState.RUNNING ? `${backup.tables.length}/${backup.tableCount}` : String(backup.tables.length);
}

/** A backup's last verification: "passed", "failed", or "-" when never verified. */
function verifiedLabel(backup: Backup): string {
  return backup.verifyResult === VerifyResult.UNSPECIFIED ? "-" : enumLabel(VerifyResult, backup.verifyResult);
}

function printBackup(output: Output, backup: Backup | undefined): void {
  if (backup === undefined) {
    return;
  }
  const verified = backup.verifyResult === VerifyResult.UNSPECIFIED ? "" : `${verifiedLabel(backup)} at ${timeLabel(backup.verifyTime)}`;
  output.record([
    ["id", backup.backupId],
    ["tenant", backup.tenantId],
    ["label", backup.label],
    ["state", enumLabel(BackupState, backup.state)],
    ["failure", backup.failureReason],
    ["cluster", backup.cluster],
    ["database", backup.database],
    ["created", timeLabel(backup.createTime)],
    ["finished", timeLabel(backup.finishTime)],
    ["took", durationLabel(backup.createTime, backup.finishTime)],
    ["size", byteLabel(backup.sizeBytes)],
    ["tables", tablesLabel(backup)],
    ["rows", String(rowsOf(backup))],
    ["versions", backup.schemaVersions.map((v) => `${v.service} ${v.version}`).join(", ")],
    ["verified", verified],
    ["verify error", backup.verifyError],
  ]);
}

function printRestore(output: Output, restore: Restore | undefined, tenant: Tenant | undefined): void {
  if (restore === undefined) {
    return;
  }
  output.record([
    ["restore", restore.restoreId],
    ["backup", restore.backupId],
    ["tenant", restore.tenantId],
    ["kind", enumLabel(RestoreKind, restore.kind)],
    ["state", enumLabel(RestoreState, restore.state)],
    ["error", restore.error],
    ["restored into", restore.database],
    ["replaced", restore.previousDatabase],
    ["undo until", restore.state === RestoreState.SUCCEEDED ? timeLabel(restore.undoDeadline) : ""],
    ["created", timeLabel(restore.createTime)],
    ["finished", timeLabel(restore.finishTime)],
    ["tenant status", tenant === undefined ? "" : enumLabel(TenantStatus, tenant.status)],
    ["served from", tenant?.database ?? ""],
  ]);
}
