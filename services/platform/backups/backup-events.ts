/** How a restore that ran is counted: in place, as a clone, or the undo of an in-place restore. */
export type CountedRestoreKind = "in_place" | "clone" | "undo";

/**
 * What backups and restores report as each one ends, for Platform's
 * metrics. Each ending is reported once, by the process that ended it
 * (a restore resumed after a restart by the Platform that resumed it).
 */
export interface BackupEvents {
  /** A backup was stored: the tier of its tenant, how long it took, and the bytes stored. */
  backupTaken(event: { tier: string; seconds: number; sizeBytes: number }): void;
  /** A backup ended FAILED, or one a stopped Platform left unfinished was marked so. */
  backupFailed(event: { tier: string }): void;
  /** A restore or an undo ran to its end: done, or failed and rolled back. */
  restoreEnded(event: { kind: CountedRestoreKind; succeeded: boolean }): void;
  /** A verification drill ended, passed or failed (recorded on the backup). */
  verified(event: { passed: boolean }): void;
}
