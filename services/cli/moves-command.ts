import { create } from "@bufbuild/protobuf";
import { durationMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import type { Command } from "commander";
import { setTimeout as sleep } from "node:timers/promises";
import { MoveMode, MovePlacement, MoveState, type Move } from "../../gen/tenantry/platform/v1/move_pb.js";
import type { Placement } from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import { GetMoveResponseSchema, ListMovesResponseSchema, MoveTenantResponseSchema, type MoveService, type MoveTenantResponse } from "../../gen/tenantry/platform/v1/move_service_pb.js";
import { ExitCode, exitCodeOf } from "./exit-codes.ts";
import { modeLabel, MoveProgress, tablesCopiedLabel } from "./move-progress.ts";
import { durationLabel, enumLabel, timeLabel, type Output } from "./output.ts";
import { withPlatform, type PlatformSession } from "./platform-session.ts";

/** The most moves ListMoves returns in one page. */
const pageSize = 500;

/** How often a move under way is read for its progress. */
const pollMs = 250;

/** The deadline of each read of a move beside MoveTenant (progress, and what became of it when the call did not answer). */
const readTimeoutMs = pollMs * 20;

/** The modes `tenants move --mode` takes. */
export const moveModeNames = ["online", "copy", "auto"];

/** The MoveMode an option named (one of {@link moveModeNames}). */
export function moveModeOf(name: string): MoveMode {
  return name === "online" ? MoveMode.ONLINE : name === "copy" ? MoveMode.COPY_UNDER_FREEZE : MoveMode.AUTO;
}

/** Adds `moves list|get`. */
export function addMovesCommand(program: Command): void {
  const moves = program.command("moves").description("follow tenants' moves between clusters (start one with `tenants move`)");

  moves
    .command("list")
    .description("list moves, newest first: every tenant's, or one tenant's")
    .argument("[tenant]", "only this tenant's moves")
    .action((tenantId: string | undefined, _options: object, command: Command) =>
      withPlatform(command, async ({ moves, output, call }) => {
        const all: Move[] = [];
        let pageToken = "";
        do {
          const page = await moves.listMoves({ tenantId: tenantId ?? "", pageSize, pageToken }, call);
          all.push(...page.moves);
          pageToken = page.nextPageToken;
        } while (pageToken !== "");
        output.result(ListMovesResponseSchema, create(ListMovesResponseSchema, { moves: all }), () =>
          output.table(
            ["ID", "TENANT", "STATE", "STEP", "MODE", "FROM", "TO", "TABLES", "CREATED", "TOOK"],
            all.map((m) => [
              m.moveId,
              m.tenantId,
              enumLabel(MoveState, m.state),
              m.step,
              modeLabel(m.mode),
              m.sourceCluster,
              m.targetCluster,
              tablesCopiedLabel(m),
              timeLabel(m.createTime),
              durationLabel(m.createTime, m.finishTime),
            ]),
            "no moves",
          ),
        );
      }),
    );

  moves
    .command("get")
    .description("show one move: its step and tables copied while it runs, the write freeze and the source database's fate once done")
    .argument("<move-id>", "the move's id")
    .action((moveId: string, _options: object, command: Command) =>
      withPlatform(command, async ({ moves, output, call }) => {
        const response = await moves.getMove({ moveId }, call);
        output.result(GetMoveResponseSchema, response, () => printMove(output, response.move));
      }),
    );
}

/** What `tenants move` asks for. */
export interface MoveRequest {
  tenantId: string;
  targetCluster: string;
  mode: MoveMode;
  compareDigests: boolean;
  /** Its placement once moved; PLACEMENT_UNSPECIFIED keeps its own. */
  targetPlacement: Placement;
  /** The pool database it goes into, pooled; empty lets Platform choose. */
  targetPoolDatabase: string;
}

/** Runs `tenants move`: the move with its progress, then its record; or why it did not end here. */
export async function runMove(session: PlatformSession, request: MoveRequest): Promise<void> {
  const response = await moveWithProgress(session, request);
  if (response !== undefined) {
    session.output.result(MoveTenantResponseSchema, response, () => printMove(session.output, response.move));
  }
}

/**
 * Calls MoveTenant and, while it runs, reads the tenant's new move for its
 * progress. Returns the answer; or undefined, the exit code set and the
 * operator told where to follow the move, when the call ended but not the
 * move: interrupted (Ctrl-C), or its deadline passed or the connection
 * dropped while the move goes on in Platform.
 */
async function moveWithProgress(session: PlatformSession, request: MoveRequest): Promise<MoveTenantResponse | undefined> {
  const { moves, output, longCall } = session;
  const { tenantId } = request;
  const live = process.stderr.isTTY === true;
  // With --json, stderr carries only an error's JSON; a terminal still gets its line.
  const progress = live || !output.json ? new MoveProgress({ stream: process.stderr, live, tenantId, targetCluster: request.targetCluster }) : undefined;
  // The tenant's moves so far are not this one; an unknown tenant has none (MoveTenant says NOT_FOUND).
  const known = await knownMoveIds(moves, tenantId).catch(() => new Set<string>());
  const interrupted = new AbortController();
  const interrupt = () => interrupted.abort();
  process.once("SIGINT", interrupt);
  const watching = new AbortController();
  const watch = progress === undefined ? Promise.resolve() : watchProgress({ moves, tenantId, known, progress, signal: watching.signal });
  try {
    const response = await moves.moveTenant(request, { ...longCall, signal: interrupted.signal });
    watching.abort();
    await watch;
    if (response.move !== undefined) {
      progress?.update(response.move);
    }
    return response;
  } catch (error) {
    watching.abort();
    await watch;
    progress?.stop();
    const cause = ConnectError.from(error);
    if (interrupted.signal.aborted) {
      const moveId = progress?.moveId ?? (await newMove(moves, tenantId, known).catch(() => undefined))?.moveId;
      output.note(`interrupted; the move goes on in Platform: ${followCommand(tenantId, moveId)}`);
      process.exitCode = ExitCode.Interrupted;
      return undefined;
    }
    if (cause.code === Code.DeadlineExceeded || cause.code === Code.Unavailable) {
      return afterLostCall(session, request, known, progress?.moveId, cause);
    }
    if (progress?.moveId !== undefined && !output.json) {
      output.note(`move ${progress.moveId} failed and was rolled back: tenantry moves get ${progress.moveId}`);
    }
    throw error;
  } finally {
    process.off("SIGINT", interrupt);
    progress?.stop();
  }
}

/**
 * After MoveTenant ended without its answer (the deadline passed, or
 * Platform or the connection went away), reads what became of the move:
 * done is done, failed is the failure, and one still under way is left to
 * go on, with the command to follow it.
 */
async function afterLostCall(session: PlatformSession, request: MoveRequest, known: Set<string>, shownId: string | undefined, cause: ConnectError): Promise<MoveTenantResponse | undefined> {
  const { moves, output } = session;
  const why = cause.code === Code.DeadlineExceeded ? "the deadline passed before the move ended" : `the call ended before the move did (${cause.rawMessage})`;
  let move: Move | undefined;
  try {
    move = shownId === undefined ? await newMove(moves, request.tenantId, known) : (await moves.getMove({ moveId: shownId }, { timeoutMs: readTimeoutMs })).move;
  } catch {
    move = undefined;
  }
  if (move?.state === MoveState.SUCCEEDED) {
    return create(MoveTenantResponseSchema, { move });
  }
  if (move?.state === MoveState.FAILED) {
    throw new ConnectError(`move ${move.moveId} failed and was rolled back: ${move.error}`, Code.FailedPrecondition);
  }
  if (move === undefined && cause.code === Code.Unavailable && shownId === undefined) {
    // Nothing says a move began: Platform or a cluster was out of reach, as the error says.
    throw cause;
  }
  const moveId = move?.moveId ?? shownId;
  const message = `${why}; the move goes on in Platform: ${followCommand(request.tenantId, moveId)}`;
  if (output.json) {
    output.error(new ConnectError(message, cause.code));
  } else {
    output.note(message);
  }
  process.exitCode = exitCodeOf(cause);
  return undefined;
}

/** The command that shows a move, or the tenant's moves while its id is not known. */
function followCommand(tenantId: string, moveId: string | undefined): string {
  return moveId === undefined ? `tenantry moves list ${tenantId}` : `tenantry moves get ${moveId}`;
}

/** The ids of the tenant's moves so far (the newest page: a new move comes first). */
async function knownMoveIds(moves: Client<typeof MoveService>, tenantId: string): Promise<Set<string>> {
  const page = await moves.listMoves({ tenantId, pageSize: 50 }, { timeoutMs: readTimeoutMs });
  return new Set(page.moves.map((m) => m.moveId));
}

/** The tenant's newest move when it is not one of `known`: the one MoveTenant started. */
async function newMove(moves: Client<typeof MoveService>, tenantId: string, known: Set<string>, signal?: AbortSignal): Promise<Move | undefined> {
  const page = await moves.listMoves({ tenantId, pageSize: 1 }, { timeoutMs: readTimeoutMs, signal });
  const newest = page.moves[0];
  return newest === undefined || known.has(newest.moveId) ? undefined : newest;
}

/** What {@link watchProgress} reads and shows. */
interface ProgressWatch {
  moves: Client<typeof MoveService>;
  tenantId: string;
  known: Set<string>;
  progress: MoveProgress;
  /** Ends the watch. */
  signal: AbortSignal;
}

/**
 * Finds the move MoveTenant started (the tenant's newest, not known
 * before) and shows it as it goes, until the signal ends the watch.
 * Failures to read are left to the MoveTenant call, whose answer is what
 * counts.
 */
async function watchProgress(watch: ProgressWatch): Promise<void> {
  const { moves, progress, signal } = watch;
  for (;;) {
    try {
      await sleep(pollMs, undefined, { signal });
    } catch {
      return;
    }
    try {
      const move =
        progress.moveId === undefined
          ? await newMove(moves, watch.tenantId, watch.known, signal)
          : (await moves.getMove({ moveId: progress.moveId }, { timeoutMs: readTimeoutMs, signal })).move;
      if (move !== undefined && !signal.aborted) {
        progress.update(move);
      }
    } catch {
      // Progress only: the next read may do better.
    }
  }
}

/** Prints a move as `key: value` lines. */
export function printMove(output: Output, move: Move | undefined): void {
  if (move === undefined) {
    return;
  }
  const sourceKept = move.state !== MoveState.SUCCEEDED ? "" : move.sourceDropped ? "dropped" : `closed, dropped after ${timeLabel(move.sourceDropTime)}`;
  output.record([
    ["id", move.moveId],
    ["tenant", move.tenantId],
    ["state", enumLabel(MoveState, move.state)],
    ["step", move.step],
    ["error", move.error],
    ["mode", modeLabel(move.mode)],
    ["from", `${move.sourceCluster} ${move.sourceDatabase}${placementNote(move, move.sourcePlacement)}`.trim()],
    ["to", `${move.targetCluster} ${move.targetDatabase}${placementNote(move, move.targetPlacement)}`.trim()],
    ["tables copied", move.tableCount === 0 ? "" : tablesCopiedLabel(move)],
    ["compare digests", move.compareDigests ? "yes" : "no"],
    ["write freeze", move.writeFreeze === undefined ? "" : `${(durationMs(move.writeFreeze) / 1000).toFixed(3)}s`],
    ["created", timeLabel(move.createTime)],
    ["switched", timeLabel(move.switchTime)],
    ["finished", timeLabel(move.finishTime)],
    ["took", durationLabel(move.createTime, move.finishTime)],
    ["source", sourceKept],
  ]);
}

/** A placement of a move that changes the tenant's, as " (pooled)" after a database; nothing for a move within one placement. */
function placementNote(move: Move, placement: MovePlacement): string {
  return move.sourcePlacement === move.targetPlacement ? "" : ` (${enumLabel(MovePlacement, placement)})`;
}
