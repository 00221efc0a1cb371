import { Code, ConnectError } from "@connectrpc/connect";

/** Awaits a call that must fail and returns its error; throws if it succeeds. */
export async function failure(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (error) {
    return ConnectError.from(error);
  }
  throw new Error("expected the call to fail");
}

/**
 * Runs a check that must refuse its input with INVALID_ARGUMENT and returns
 * the refusal's message, or undefined when the check accepts. Any other
 * error is thrown on.
 */
export function refusal(check: () => unknown): string | undefined {
  try {
    check();
  } catch (error) {
    const cause = ConnectError.from(error);
    if (cause.code !== Code.InvalidArgument) {
      throw cause;
    }
    return cause.rawMessage;
  }
  return undefined;
}
