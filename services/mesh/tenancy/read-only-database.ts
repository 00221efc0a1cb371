/** Wrappers are followed this deep at most (a `cause` chain may loop). */
const maxDepth = 8;

/**
 * Whether an error says that the database took no write because its
 * session is read-only (SQLSTATE 25006): a tenant whose writes are frozen
 * for a moment (a move's cutover makes the tenant's sessions read-only).
 * Reads go on; a write may be sent again shortly, so it is answered
 * UNAVAILABLE rather than INTERNAL. Looks through the wrappers drivers and
 * ORMs put around the original error, as `isDatabaseUnreachable` does.
 */
export function isReadOnlyRefusal(error: unknown): boolean {
  return refused(error, 0);
}

function refused(error: unknown, depth: number): boolean {
  if (typeof error !== "object" || error === null || depth > maxDepth) {
    return false;
  }
  const { code, cause } = error as { code?: unknown; cause?: unknown };
  if (code === "25006") {
    return true;
  }
  return cause !== error && refused(cause, depth + 1);
}
