import { Presets, SingleBar } from "cli-progress";
import { MoveMode, MoveState, type Move } from "../../gen/tenantry/platform/v1/move_pb.js";

/** Options of {@link MoveProgress}. */
export interface MoveProgressOptions {
  /** Where progress goes: stderr, so that stdout keeps only the result. */
  stream: NodeJS.WritableStream;
  /** Redraw one line in place (a terminal); otherwise write one line per step (logs, pipes). */
  live: boolean;
  /** The tenant moved. */
  tenantId: string;
  /** The cluster it goes to. */
  targetCluster: string;
}

/** A move's mode for people: "online", "copy under freeze", or "auto" until Platform has chosen. */
export function modeLabel(mode: MoveMode): string {
  switch (mode) {
    case MoveMode.ONLINE:
      return "online";
    case MoveMode.COPY_UNDER_FREEZE:
      return "copy under freeze";
    default:
      return "auto";
  }
}

/** "3/7" once the copy's tables are known, else "-". */
export function tablesCopiedLabel(move: Move): string {
  return move.tableCount === 0 ? "-" : `${move.tablesCopied}/${move.tableCount}`;
}

/**
 * Shows a move from its record as read while it runs: on a terminal one
 * line redrawn in place, with a bar of the tables copied, the step, the
 * mode, the time elapsed and the move's id; anywhere else one line each
 * time the step is seen to change, the first naming the move, so that a
 * log says which move to look for should the command end before it.
 */
export class MoveProgress {
  readonly #options: MoveProgressOptions;
  #bar: SingleBar | undefined;
  #moveId: string | undefined;
  #step: string | undefined;

  constructor(options: MoveProgressOptions) {
    this.#options = options;
  }

  /** The move shown, once one is. */
  get moveId(): string | undefined {
    return this.#moveId;
  }

  /** Shows the move as last read. */
  update(move: Move): void {
    this.#moveId = move.moveId;
    const step = move.state === MoveState.RUNNING ? move.step : `${move.step}, ${MoveState[move.state].toLowerCase()}`;
    if (!this.#options.live) {
      if (step !== this.#step) {
        const tables = move.tableCount === 0 ? "" : `, ${tablesCopiedLabel(move)} tables copied`;
        this.#options.stream.write(`moving ${this.#options.tenantId} to ${this.#options.targetCluster}: ${step} (${modeLabel(move.mode)}${tables}) | move ${move.moveId}\n`);
      }
      this.#step = step;
      return;
    }
    this.#step = step;
    const payload = { tenant: this.#options.tenantId, target: this.#options.targetCluster, step, mode: modeLabel(move.mode), id: move.moveId };
    if (this.#bar === undefined) {
      this.#bar = new SingleBar(
        {
          stream: this.#options.stream,
          format: "moving {tenant} to {target} {bar} {value}/{total} tables | {step} | {mode} | {duration_formatted} | move {id}",
          barsize: 24,
          hideCursor: true,
          // Until the copy's tables are known the total is 0: an empty bar, not a full one.
          emptyOnZero: true,
        },
        Presets.shades_classic,
      );
      this.#bar.start(move.tableCount, move.tablesCopied, payload);
    } else {
      this.#bar.setTotal(move.tableCount);
      this.#bar.update(move.tablesCopied, payload);
    }
  }

  /** Ends the line, leaving its last state on the screen. */
  stop(): void {
    this.#bar?.stop();
    this.#bar = undefined;
  }
}
