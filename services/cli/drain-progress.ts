import { Presets, SingleBar } from "cli-progress";
import { DrainEvent, type DrainClusterResponse } from "../../gen/tenantry/platform/v1/move_service_pb.js";
import { counted } from "./output.ts";

/** Options of {@link DrainProgress}. */
export interface DrainProgressOptions {
  /** Where progress goes: stderr, so that stdout keeps only the result. */
  stream: NodeJS.WritableStream;
  /** Draw a live bar (a terminal); otherwise write one line per event (logs, pipes). */
  live: boolean;
  /** The cluster drained. */
  cluster: string;
}

/**
 * Shows a cluster's drain from the events of its stream and their running
 * totals: on a terminal a bar of tenants done (moved, failed or left)
 * against the tenants found, redrawn in place; anywhere else one plain
 * line per event, naming each move so that a log says what to look for.
 */
export class DrainProgress {
  readonly #options: DrainProgressOptions;
  #bar: SingleBar | undefined;

  constructor(options: DrainProgressOptions) {
    this.#options = options;
  }

  /** Shows one event. */
  update(event: DrainClusterResponse): void {
    const totals = event.totals;
    const total = totals?.total ?? 0;
    const done = total - (totals?.remaining ?? 0);
    if (!this.#options.live) {
      this.#options.stream.write(`${done}/${total} ${lineOf(this.#options.cluster, event)}\n`);
      return;
    }
    const payload = {
      cluster: this.#options.cluster,
      moved: totals?.moved ?? 0,
      failed: totals?.failed ?? 0,
      left: totals?.left ?? 0,
      moving: totals?.moving ?? 0,
      last: event.tenantId === "" ? "" : `| ${event.tenantId} ${eventLabel(event.event)}`,
    };
    if (this.#bar === undefined) {
      this.#bar = new SingleBar(
        {
          stream: this.#options.stream,
          format: "draining {cluster} {bar} {value}/{total} tenants | {moved} moved, {moving} moving, {failed} failed, {left} left | {duration_formatted} {last}",
          barsize: 24,
          hideCursor: true,
          // A cluster with no tenants: an empty bar, not a full one.
          emptyOnZero: true,
        },
        Presets.shades_classic,
      );
      this.#bar.start(total, done, payload);
    } else {
      this.#bar.setTotal(total);
      this.#bar.update(done, payload);
    }
  }

  /** Ends the bar, leaving its last state on the screen. */
  stop(): void {
    this.#bar?.stop();
    this.#bar = undefined;
  }
}

/** How an event is named on a line: "move started", "left". */
function eventLabel(event: DrainEvent): string {
  return (DrainEvent[event] ?? String(event)).toLowerCase().replaceAll("_", " ");
}

function lineOf(cluster: string, event: DrainClusterResponse): string {
  const totals = event.totals;
  switch (event.event) {
    case DrainEvent.STARTED:
      return `draining ${cluster}: ${counted(totals?.total ?? 0, "tenant")} on it`;
    case DrainEvent.FINISHED:
      return `drained ${cluster}: ${totals?.moved ?? 0} moved, ${totals?.failed ?? 0} failed, ${totals?.left ?? 0} left`;
    case DrainEvent.MOVE_STARTED:
    case DrainEvent.MOVE_FOLLOWED:
    case DrainEvent.MOVE_SUCCEEDED:
      return `${event.tenantId} ${eventLabel(event.event)} -> ${event.targetCluster} (move ${event.moveId})`;
    default:
      return `${event.tenantId} ${eventLabel(event.event)}${event.moveId === "" ? "" : ` (move ${event.moveId})`}: ${event.error}`;
  }
}
