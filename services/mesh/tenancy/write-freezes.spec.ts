import { Code, ConnectError } from "@connectrpc/connect";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { createLogger } from "../telemetry/logger.ts";
import { WriteFreezes } from "./write-freezes.ts";

/** Write freezes whose acknowledgements are recorded, as "tenant freeze". */
function freezesFor(maxHoldMs = 600_000) {
  const acknowledged: string[] = [];
  const freezes = new WriteFreezes({
    maxHoldMs,
    acknowledge: async ({ tenantId, freezeId }) => {
      acknowledged.push(`${tenantId} ${freezeId}`);
    },
    log: createLogger("test", "silent"),
  });
  return { freezes, acknowledged };
}

const never = new AbortController().signal;

describe("write freezes", () => {
  it("let an unfrozen tenant's writes in at once, counted until they leave", () => {
    const { freezes } = freezesFor();
    expect(freezes.enter("acme", never)).toBeUndefined();
    expect(freezes.enter("acme", never)).toBeUndefined();
    expect(freezes.writesUnderWay("acme")).toBe(2);
    freezes.leave("acme");
    freezes.leave("acme");
    expect(freezes.writesUnderWay("acme")).toBe(0);
  });

  it("hold a frozen tenant's writes until the thaw, and acknowledge once the writes under way have left", async () => {
    const { freezes, acknowledged } = freezesFor();
    expect(freezes.enter("acme", never)).toBeUndefined();
    freezes.apply({ tenantId: "acme", freezeId: "f1", leaseMs: 600_000 });
    const held = freezes.enter("acme", never);
    expect(held).toBeInstanceOf(Promise);
    expect(freezes.enter("globex", never)).toBeUndefined();
    expect(freezes.writesHeld("acme")).toBe(1);
    await sleep(10);
    expect(acknowledged).toEqual([]);

    freezes.leave("acme");
    await expect.poll(() => acknowledged).toEqual(["acme f1"]);
    freezes.apply({ tenantId: "acme", freezeId: "f1", leaseMs: 0 });
    await held;
    expect(freezes.writesUnderWay("acme")).toBe(1);
    expect(freezes.isFrozen("acme")).toBe(false);
  });

  it("answer UNAVAILABLE after the longest hold, and the call's own error when it is cancelled", async () => {
    const { freezes } = freezesFor(50);
    freezes.apply({ tenantId: "acme", freezeId: "f1", leaseMs: 600_000 });
    const failure = await freezes.enter("acme", never)!.catch((e: unknown) => ConnectError.from(e));
    expect(failure).toMatchObject({ code: Code.Unavailable, rawMessage: 'tenant "acme" is moving: its writes are paused for a moment (this one was held 50 ms); retry shortly' });

    const patient = freezesFor();
    patient.freezes.apply({ tenantId: "acme", freezeId: "f1", leaseMs: 600_000 });
    const call = new AbortController();
    const held = patient.freezes.enter("acme", call.signal)!.catch((e: unknown) => ConnectError.from(e));
    call.abort(new ConnectError("the client gave up", Code.DeadlineExceeded));
    expect(await held).toMatchObject({ code: Code.DeadlineExceeded });
    expect(patient.freezes.writesHeld("acme")).toBe(0);
    expect(patient.freezes.writesUnderWay("acme")).toBe(0);
  });

  it("end a freeze whose lease runs out, unless renewed", async () => {
    const { freezes } = freezesFor();
    freezes.apply({ tenantId: "acme", freezeId: "f1", leaseMs: 100 });
    freezes.apply({ tenantId: "acme", freezeId: "f1", leaseMs: 600_000 });
    freezes.apply({ tenantId: "globex", freezeId: "f2", leaseMs: 100 });
    const held = freezes.enter("globex", never);
    await held;
    expect(freezes.isFrozen("globex")).toBe(false);
    expect(freezes.isFrozen("acme")).toBe(true);
  });

  it("keep holding a write when another freeze replaces the one it waited on, and acknowledge the new one", async () => {
    const { freezes, acknowledged } = freezesFor();
    freezes.apply({ tenantId: "acme", freezeId: "f1", leaseMs: 600_000 });
    let done = false;
    const held = freezes.enter("acme", never)!.then(() => (done = true));
    freezes.apply({ tenantId: "acme", freezeId: "f2", leaseMs: 600_000 });
    await expect.poll(() => acknowledged).toEqual(["acme f1", "acme f2"]);
    expect(done).toBe(false);
    freezes.apply({ tenantId: "acme", freezeId: "f1", leaseMs: 0 });
    expect(freezes.isFrozen("acme")).toBe(true);
    freezes.apply({ tenantId: "acme", freezeId: "f2", leaseMs: 0 });
    await held;
  });

  it("take the freezes in force from a reconnected feed: those not listed have ended", async () => {
    const { freezes, acknowledged } = freezesFor();
    freezes.apply({ tenantId: "acme", freezeId: "f1", leaseMs: 600_000 });
    freezes.apply({ tenantId: "globex", freezeId: "f2", leaseMs: 600_000 });
    const held = freezes.enter("acme", never);
    freezes.reset([
      { tenantId: "globex", freezeId: "f2", leaseMs: 600_000 },
      { tenantId: "initech", freezeId: "f3", leaseMs: 600_000 },
    ]);
    await held;
    expect(["acme", "globex", "initech"].map((t) => freezes.isFrozen(t))).toEqual([false, true, true]);
    await expect.poll(() => acknowledged.sort()).toEqual(["acme f1", "globex f2", "initech f3"]);

    const closing = freezes.enter("globex", never);
    freezes.close();
    await closing;
    expect(freezes.isFrozen("initech")).toBe(false);
  });
});
