import { Presets, SingleBar } from "cli-progress";
import { MigrationOutcome, type MigrateTenantsResponse, type MigrationTotals } from "../../gen/tenantry/platform/v1/fleet_service_pb.js";
import { enumLabel } from "./output.ts";

/** Options of {@link MigrationProgress}. */
export interface MigrationProgressOptions {
  /** Where progress goes: stderr, so that stdout keeps only the result. */
  stream: NodeJS.WritableStream;
  /** Draw a live bar (a terminal); otherwise write one line per finished tenant × service (logs, pipes). */
  live: boolean;
}

/**
 * Shows a fleet migration's progress from the events of its stream and
 * their running totals: a bar redrawn in place on a terminal, one plain
 * line per finished tenant × service anywhere else.
 */
export class MigrationProgress {
  readonly #stream: NodeJS.WritableStream;
  readonly #live: boolean;
  #bar: SingleBar | undefined;

  constructor(options: MigrationProgressOptions) {
    this.#stream = options.stream;
    this.#live = options.live;
  }

  /** Shows one finished tenant × service. */
  update(event: MigrateTenantsResponse): void {
    const totals = event.totals;
    if (!this.#live) {
      this.#stream.write(`${lineOf(event, totals)}\n`);
      return;
    }
    const payload = { migrated: totals?.migrated ?? 0, current: totals?.current ?? 0, failed: totals?.failed ?? 0, last: `${event.tenantId} ${event.service}` };
    if (this.#bar === undefined) {
      // The total is known only from the first event: the bar starts there.
      this.#bar = new SingleBar(
        {
          stream: this.#stream,
          format: "migrating {bar} {value}/{total} | {migrated} migrated, {current} current, {failed} failed | {last}",
          hideCursor: true,
        },
        Presets.shades_classic,
      );
      this.#bar.start(totals?.total ?? 0, totals?.done ?? 0, payload);
    } else {
      this.#bar.update(totals?.done ?? 0, payload);
    }
  }

  /** Ends the bar, leaving its last state on the screen. */
  stop(): void {
    this.#bar?.stop();
    this.#bar = undefined;
  }
}

function lineOf(event: MigrateTenantsResponse, totals: MigrationTotals | undefined): string {
  const count = totals === undefined ? "" : `${totals.done}/${totals.total} `;
  const head = `${count}${event.tenantId} ${event.service} ${enumLabel(MigrationOutcome, event.outcome)}`;
  switch (event.outcome) {
    case MigrationOutcome.MIGRATED:
    case MigrationOutcome.WOULD_MIGRATE: {
      const added = event.addedPermissions.length > 0 ? `, permissions added: ${event.addedPermissions.join(", ")}` : "";
      return `${head} ${event.fromVersion || "(none)"} -> ${event.toVersion}${added}`;
    }
    case MigrationOutcome.FAILED:
      return `${head}: ${event.error}`;
    default:
      return `${head} at ${event.toVersion}`;
  }
}
