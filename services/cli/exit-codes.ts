import { Code, ConnectError } from "@connectrpc/connect";
import { CommanderError } from "commander";

/** The exit statuses of `tenantry`, which scripts may rely on. */
export const ExitCode = {
  /** The command did what it was asked. */
  Success: 0,
  /** The command ran but something failed (a tenant's migration, a verification drill), or an unexpected error. */
  Failure: 1,
  /** A usage error, or Platform answered INVALID_ARGUMENT. */
  Usage: 2,
  /** NOT_FOUND: no such tenant, cluster, backup or move. */
  NotFound: 3,
  /** UNAUTHENTICATED or PERMISSION_DENIED, or no operator token was found. */
  Denied: 4,
  /** UNAVAILABLE or DEADLINE_EXCEEDED: Platform unreachable or too slow. */
  Unavailable: 5,
  /** ALREADY_EXISTS, FAILED_PRECONDITION, ABORTED or RESOURCE_EXHAUSTED: the state does not allow it. */
  Conflict: 6,
  /** Stopped by Ctrl-C (SIGINT), as shells report it. */
  Interrupted: 130,
} as const;

export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

const byCode = new Map<Code, ExitCode>([
  [Code.InvalidArgument, ExitCode.Usage],
  [Code.NotFound, ExitCode.NotFound],
  [Code.Unauthenticated, ExitCode.Denied],
  [Code.PermissionDenied, ExitCode.Denied],
  [Code.Unavailable, ExitCode.Unavailable],
  [Code.DeadlineExceeded, ExitCode.Unavailable],
  [Code.AlreadyExists, ExitCode.Conflict],
  [Code.FailedPrecondition, ExitCode.Conflict],
  [Code.Aborted, ExitCode.Conflict],
  [Code.ResourceExhausted, ExitCode.Conflict],
]);

/** The exit status for an error a command ended with. */
export function exitCodeOf(error: unknown): ExitCode {
  if (error instanceof CommanderError) {
    // Commander ends --help with 0 and every usage error with 1; scripts need usage errors apart.
    return error.exitCode === 0 ? ExitCode.Success : ExitCode.Usage;
  }
  if (error instanceof ConnectError) {
    return byCode.get(error.code) ?? ExitCode.Failure;
  }
  return ExitCode.Failure;
}

/** The exit statuses as `tenantry --help` lists them. */
export const exitCodeHelp = `
Exit codes:
  0    success
  1    the command ran but something failed (a tenant's migration, a backup's verification), or an unexpected error
  2    usage error, or INVALID_ARGUMENT
  3    NOT_FOUND
  4    UNAUTHENTICATED or PERMISSION_DENIED, or no operator token found
  5    UNAVAILABLE or DEADLINE_EXCEEDED (Platform unreachable)
  6    ALREADY_EXISTS, FAILED_PRECONDITION, ABORTED or RESOURCE_EXHAUSTED
  130  interrupted (Ctrl-C)`;
