import { Code, ConnectError } from "@connectrpc/connect";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { RateLimit } from "./rate-limit.ts";

function refusal(limit: RateLimit, key: string): ConnectError | undefined {
  try {
    limit.take(key);
    return undefined;
  } catch (error) {
    return ConnectError.from(error);
  }
}

describe("rate limit", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("allows so many attempts per key and window, then refuses with when to retry, until the window ends", () => {
    const limit = new RateLimit({ perWindow: 2, windowMs: 3_600_000, refusal: "too many backups" });
    expect(refusal(limit, "acme")).toBeUndefined();
    vi.advanceTimersByTime(600_000);
    expect(refusal(limit, "acme")).toBeUndefined();
    const refused = refusal(limit, "acme")!;
    expect(refused.code).toBe(Code.ResourceExhausted);
    expect(refused.rawMessage).toBe("too many backups; retry in 50 min");
    expect(refused.metadata.get("retry-after")).toBe("3000");
    // Another key has a window of its own.
    expect(refusal(limit, "globex")).toBeUndefined();
    vi.advanceTimersByTime(3_000_000 - 90_000);
    expect(refusal(limit, "acme")?.rawMessage).toBe("too many backups; retry in 90 s");
    vi.advanceTimersByTime(90_000);
    expect(refusal(limit, "acme")).toBeUndefined();
  });
});
