import type { StreamResponse } from "@connectrpc/connect";

/** What {@link guardStream} does around a response stream. */
export interface StreamGuard {
  /** Replaces an error the stream throws. */
  mapError?: (error: unknown) => unknown;
  /** Runs once the stream has ended, however it ended. */
  finally?: () => void;
}

/**
 * Returns the response with its message stream guarded: interceptors see a
 * streaming call's errors and its end only while the stream is iterated,
 * after they have returned.
 */
export function guardStream(res: StreamResponse, guard: StreamGuard): StreamResponse {
  const messages = res.message;
  return {
    ...res,
    message: (async function* () {
      try {
        yield* messages;
      } catch (error) {
        throw guard.mapError ? guard.mapError(error) : error;
      } finally {
        guard.finally?.();
      }
    })(),
  };
}
