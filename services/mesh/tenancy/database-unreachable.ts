/**
 * SQLSTATEs that say the server cannot take or keep the connection now:
 * admin shutdown (a restart, `pg_terminate_backend`), crash shutdown,
 * cannot connect now (starting up, shutting down, in recovery),
 * idle_session_timeout, too many connections. Class 08 (connection
 * exception) is matched as a whole. 57P04 (database dropped) is not here:
 * retrying cannot help.
 */
const unreachableStates = new Set(["57P01", "57P02", "57P03", "57P05", "53300"]);

/** Node's codes for a socket that could not be opened or broke. */
const socketCodes = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENETDOWN",
  "EAI_AGAIN",
]);

/**
 * What `pg` and `pg-pool` say, with no code, when a connection ends under a
 * query, is used after it broke, or cannot be opened in time.
 */
const codelessMessages = new Set([
  "Connection terminated unexpectedly",
  "Connection terminated",
  "Client has encountered a connection error and is not queryable",
  "Connection terminated due to connection timeout",
  "timeout expired",
  "timeout exceeded when trying to connect",
]);

/** Wrappers are followed this deep at most (a `cause` chain may loop). */
const maxDepth = 8;

/**
 * Whether an error means that the database could not be reached or that the
 * connection to it broke: a transient condition that a retry on a new
 * connection may get past, to be answered with UNAVAILABLE rather than
 * INTERNAL. Looks through the wrappers drivers and ORMs put around the
 * original error (`cause` chains, MikroORM's DriverException, which copies
 * the code and message, and AggregateError's `errors`).
 */
export function isDatabaseUnreachable(error: unknown): boolean {
  return unreachable(error, 0);
}

function unreachable(error: unknown, depth: number): boolean {
  if (typeof error !== "object" || error === null || depth > maxDepth) {
    return false;
  }
  const { code, message, cause, errors } = error as { code?: unknown; message?: unknown; cause?: unknown; errors?: unknown };
  if (typeof code === "string" && (code.startsWith("08") || unreachableStates.has(code) || socketCodes.has(code))) {
    return true;
  }
  if (typeof message === "string" && codelessMessages.has(message)) {
    return true;
  }
  if (Array.isArray(errors) && errors.some((e) => unreachable(e, depth + 1))) {
    return true;
  }
  return cause !== error && unreachable(cause, depth + 1);
}
