import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import type { Logger } from "../telemetry/logger.ts";
import { isDatabaseUnreachable } from "../tenancy/database-unreachable.ts";
import { isReadOnlyRefusal } from "../tenancy/read-only-database.ts";
import { guardStream } from "../wire/stream-response.ts";

/**
 * Turns every error a handler throws into one a client may see. A
 * ConnectError passes as it is; anything else is logged with its detail and
 * returned as INTERNAL (or UNAVAILABLE for a lost database connection, or a
 * write refused while the tenant's writes are frozen) with an incident id,
 * never with SQL or a stack trace.
 */
export function errorInterceptor(log: Logger): Interceptor {
  return (next) => async (req) => {
    const publicError = (error: unknown) => toPublicError(error, `${req.service.typeName}/${req.method.name}`, log);
    let res;
    try {
      res = await next(req);
    } catch (error) {
      throw publicError(error);
    }
    return res.stream ? guardStream(res, { mapError: publicError }) : res;
  };
}

function toPublicError(error: unknown, procedure: string, log: Logger): ConnectError {
  const meant = connectErrorIn(error);
  if (meant !== undefined) {
    return meant;
  }
  const incident = randomUUID().slice(0, 8);
  if (isDatabaseUnreachable(error)) {
    // Expected while a database restarts: worth a warning, not an error.
    log.warn({ err: error, procedure, incident }, "call failed: the database is unreachable");
    return new ConnectError(`the database is unreachable (incident ${incident}); retry later`, Code.Unavailable);
  }
  if (isReadOnlyRefusal(error)) {
    log.info({ procedure, incident }, "write refused: the tenant's writes are frozen for a moment");
    return new ConnectError(`the tenant's writes are frozen for a moment while its database is moved (incident ${incident}); retry shortly`, Code.Unavailable);
  }
  log.error({ err: error, procedure, incident }, "call failed");
  return new ConnectError(`internal error (incident ${incident}); the service log has the detail`, Code.Internal);
}

/**
 * The ConnectError that `error` is or wraps (as its `cause`, a few levels
 * deep): code beneath an ORM or driver that says what went wrong (no
 * database connection within the deadline, say) is answered as it said.
 */
function connectErrorIn(error: unknown): ConnectError | undefined {
  for (let depth = 0; depth < 8 && typeof error === "object" && error !== null; depth++) {
    if (error instanceof ConnectError) {
      return error;
    }
    error = (error as { cause?: unknown }).cause;
  }
  return undefined;
}
