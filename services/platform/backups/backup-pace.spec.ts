import { Readable, type Transform } from "node:stream";
import { afterEach, describe, expect, it, vi } from "vitest";
import { BackupPace } from "./backup-pace.ts";

/** Writes `chunks` of `bytes` bytes each into `stream` and records, by name, the order they come out in. */
function feed(stream: Transform, name: string, chunks: number, bytes: number, out: string[]): void {
  stream.on("data", () => out.push(name));
  for (let i = 0; i < chunks; i++) {
    stream.write(Buffer.alloc(bytes));
  }
}

describe("backup pace", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("lets everything through at once without a limit", async () => {
    const stream = Readable.from([Buffer.alloc(1 << 20), Buffer.alloc(1 << 20)]).pipe(new BackupPace(0).through());
    let bytes = 0;
    for await (const chunk of stream) {
      bytes += (chunk as Buffer).length;
    }
    expect(bytes).toBe(2 << 20);
  });

  it("holds the chunks of all its streams to the rate, together", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "performance"] });
    // 1,000 bytes a second: a chunk of 100 bytes is 100 ms of pace; the first passes at once, b's waits for a's two.
    const pace = new BackupPace(1000);
    const out: string[] = [];
    feed(pace.through(), "a", 2, 100, out);
    feed(pace.through(), "b", 1, 100, out);
    await vi.advanceTimersByTimeAsync(0);
    expect(out).toEqual(["a"]);
    await vi.advanceTimersByTimeAsync(99);
    expect(out).toEqual(["a"]);
    await vi.advanceTimersByTimeAsync(1);
    expect(out).toEqual(["a", "a"]);
    await vi.advanceTimersByTimeAsync(99);
    expect(out).toEqual(["a", "a"]);
    await vi.advanceTimersByTimeAsync(1);
    expect(out).toEqual(["a", "a", "b"]);
  });

  it("does not save up the time a stream was idle for a burst", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "performance"] });
    const pace = new BackupPace(1000);
    const out: string[] = [];
    const stream = pace.through();
    feed(stream, "a", 1, 100, out);
    await vi.advanceTimersByTimeAsync(10_000);
    feed(pace.through(), "b", 2, 100, out);
    await vi.advanceTimersByTimeAsync(0);
    expect(out).toEqual(["a", "b"]);
    await vi.advanceTimersByTimeAsync(99);
    expect(out).toEqual(["a", "b"]);
    await vi.advanceTimersByTimeAsync(1);
    expect(out).toEqual(["a", "b", "b"]);
  });
});
