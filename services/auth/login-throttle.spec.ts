import { Code, ConnectError } from "@connectrpc/connect";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { LoginThrottle } from "./login-throttle.ts";

/** What `check` says now: "open", or the message of its RESOURCE_EXHAUSTED. */
function state(throttle: LoginThrottle, tenantId: string, email: string): string {
  try {
    throttle.check(tenantId, email);
    return "open";
  } catch (error) {
    const cause = ConnectError.from(error);
    expect(cause.code).toBe(Code.ResourceExhausted);
    return cause.rawMessage;
  }
}

function fail(throttle: LoginThrottle, times: number, tenantId = "acme", email = "owner@example.com"): void {
  for (let i = 0; i < times; i++) {
    throttle.failed(tenantId, email);
  }
}

beforeEach(() => {
  vi.useFakeTimers({ toFake: ["Date"], now: new Date("2026-12-01T10:00:00Z") });
});
afterEach(() => {
  vi.useRealTimers();
});

describe("login throttle", () => {
  it("lets the first failures go, then locks the email for a while that doubles with each failure, up to the most", () => {
    const throttle = new LoginThrottle({ freeAttempts: 3, baseLockMs: 1000, maxLockMs: 4000 });
    fail(throttle, 2);
    expect(state(throttle, "acme", "owner@example.com")).toBe("open");
    fail(throttle, 1);
    expect(state(throttle, "acme", "owner@example.com")).toBe("too many failed logins for this email; retry in 1 s");
    vi.advanceTimersByTime(999);
    expect(state(throttle, "acme", "owner@example.com")).not.toBe("open");
    vi.advanceTimersByTime(1);
    expect(state(throttle, "acme", "owner@example.com")).toBe("open");

    fail(throttle, 1);
    expect(state(throttle, "acme", "owner@example.com")).toMatch(/retry in 2 s$/);
    fail(throttle, 1);
    expect(state(throttle, "acme", "owner@example.com")).toMatch(/retry in 4 s$/);
    fail(throttle, 3);
    expect(state(throttle, "acme", "owner@example.com")).toMatch(/retry in 4 s$/);
  });

  it("counts each tenant's email apart, in any letter case", () => {
    const throttle = new LoginThrottle({ freeAttempts: 2 });
    fail(throttle, 1, "acme", "Owner@Example.com");
    fail(throttle, 1, "acme", "owner@example.COM");
    expect(state(throttle, "acme", "OWNER@example.com")).toMatch(/too many failed logins/);
    expect(state(throttle, "acme", "someone@example.com")).toBe("open");
    expect(state(throttle, "other", "owner@example.com")).toBe("open");
  });

  it("forgets the failures of an email that logs in", () => {
    const throttle = new LoginThrottle({ freeAttempts: 2, baseLockMs: 60_000 });
    fail(throttle, 2);
    expect(state(throttle, "acme", "owner@example.com")).toMatch(/retry in 60 s$/);
    throttle.succeeded("acme", "owner@example.com");
    expect(state(throttle, "acme", "owner@example.com")).toBe("open");
    fail(throttle, 1);
    expect(state(throttle, "acme", "owner@example.com")).toBe("open");
  });

  it("allows five failures by default, then locks for a second", () => {
    const throttle = new LoginThrottle();
    fail(throttle, 4);
    expect(state(throttle, "acme", "owner@example.com")).toBe("open");
    fail(throttle, 1);
    expect(state(throttle, "acme", "owner@example.com")).toMatch(/retry in 1 s$/);
  });
});
