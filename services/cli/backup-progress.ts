import { Presets, SingleBar } from "cli-progress";
import type { Backup } from "../../gen/tenantry/platform/v1/backup_service_pb.js";
import { byteLabel } from "./output.ts";

/** Options of {@link BackupProgress}. */
export interface BackupProgressOptions {
  /** Where progress goes: stderr, so that stdout keeps only the result. */
  stream: NodeJS.WritableStream;
  /** Draw a live bar (a terminal); otherwise write one line once the backup is known (logs, pipes). */
  live: boolean;
  /** The tenant backed up. */
  tenantId: string;
}

/** The rows of the tables a backup has stored so far. */
export function rowsOf(backup: Backup): bigint {
  return backup.tables.reduce((sum, table) => sum + table.rows, 0n);
}

/**
 * Shows a backup being taken from its record as read while it runs: on a
 * terminal a bar of tables stored against the tables in its snapshot,
 * with rows, bytes stored and time elapsed, redrawn in place; anywhere
 * else one line naming the backup once it is known, so that a log says
 * which backup to look for should the command end before it.
 */
export class BackupProgress {
  readonly #options: BackupProgressOptions;
  #bar: SingleBar | undefined;
  #backupId: string | undefined;

  constructor(options: BackupProgressOptions) {
    this.#options = options;
  }

  /** Whether later reads of the backup would show anything more. */
  get wantsUpdates(): boolean {
    return this.#options.live || this.#backupId === undefined;
  }

  /** The backup shown, once one is. */
  get backupId(): string | undefined {
    return this.#backupId;
  }

  /** Shows the backup as last read. */
  update(backup: Backup): void {
    const first = this.#backupId === undefined;
    this.#backupId = backup.backupId;
    if (!this.#options.live) {
      if (first) {
        this.#options.stream.write(`backing up ${this.#options.tenantId}: backup ${backup.backupId}\n`);
      }
      return;
    }
    const payload = { tenant: this.#options.tenantId, rows: String(rowsOf(backup)), size: byteLabel(backup.sizeBytes), id: backup.backupId };
    if (this.#bar === undefined) {
      this.#bar = new SingleBar(
        {
          stream: this.#options.stream,
          format: "backing up {tenant} {bar} {value}/{total} tables | {rows} rows | {size} | {duration_formatted} | backup {id}",
          barsize: 24,
          hideCursor: true,
          // Until the snapshot is taken the total is 0: an empty bar, not a full one.
          emptyOnZero: true,
        },
        Presets.shades_classic,
      );
      this.#bar.start(backup.tableCount, backup.tables.length, payload);
    } else {
      this.#bar.setTotal(backup.tableCount);
      this.#bar.update(backup.tables.length, payload);
    }
  }

  /** Ends the bar, leaving its last state on the screen. */
  stop(): void {
    this.#bar?.stop();
    this.#bar = undefined;
  }
}
