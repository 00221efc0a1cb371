import { Code, ConnectError } from "@connectrpc/connect";

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Whether `value` is a UUID, in any letter case. */
export function isUuid(value: unknown): boolean {
  return typeof value === "string" && uuidPattern.test(value);
}

/** Returns a UUID in lower case, or INVALID_ARGUMENT naming what it should have been (`what`, such as "entry id"). */
export function checkUuid(value: string, what: string): string {
  if (!isUuid(value)) {
    throw new ConnectError(`malformed ${what} ${JSON.stringify(value.slice(0, 60))}: expected a UUID`, Code.InvalidArgument);
  }
  return value.toLowerCase();
}
