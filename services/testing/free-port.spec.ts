import { describe, expect, it } from "vitest";
import { ephemeralRange, portBlock, testPortRange, type PortRange } from "./free-port.ts";

const overlap = (a: PortRange, b: PortRange) => a.from < b.to && b.from < a.to;

describe("test ports' range", () => {
  it("reads the kernel's ephemeral range, or takes Linux's default", () => {
    expect(ephemeralRange("32768\t60999\n")).toEqual({ from: 32_768, to: 61_000 });
    expect(ephemeralRange("49152 65535")).toEqual({ from: 49_152, to: 65_536 });
    for (const text of [undefined, "", "garbage", "60999 32768", "0 100", "1024 70000"]) {
      expect(ephemeralRange(text), String(text)).toEqual({ from: 32_768, to: 61_000 });
    }
  });

  it("lies outside the ephemeral range: below it, or above it where there is more room", () => {
    expect(testPortRange({ from: 32_768, to: 61_000 })).toEqual({ from: 16_384, to: 32_768 });
    expect(testPortRange({ from: 49_152, to: 65_536 })).toEqual({ from: 32_768, to: 49_152 });
    expect(testPortRange({ from: 2_000, to: 40_000 })).toEqual({ from: 40_000, to: 65_536 });
  });
});

describe("a process's block of ports", () => {
  const range = testPortRange({ from: 32_768, to: 61_000 });

  it("is its vitest worker's own: no two workers of a run share a port", () => {
    const workers = Array.from({ length: 48 }, (_, i) => portBlock(range, { poolId: i + 1, pid: 4242 }));
    for (const [i, block] of workers.entries()) {
      expect(block.from).toBeGreaterThanOrEqual(range.from);
      expect(block.to).toBeLessThanOrEqual(range.to);
      expect(block.to - block.from).toBe(256);
      expect(workers.filter((other, j) => j !== i && overlap(block, other))).toEqual([]);
    }
    // The same worker's block whatever the process that runs it.
    expect(portBlock(range, { poolId: 3, pid: 1 })).toEqual(portBlock(range, { poolId: 3, pid: 99_999 }));
  });

  it("is, for a process that is no worker, one by its pid that no worker has", () => {
    const workers = Array.from({ length: 48 }, (_, i) => portBlock(range, { poolId: i + 1, pid: 0 }));
    const others = Array.from({ length: 40 }, (_, pid) => portBlock(range, { poolId: undefined, pid: 1000 + pid }));
    for (const block of others) {
      expect(block.from).toBeGreaterThanOrEqual(range.from);
      expect(block.to).toBeLessThanOrEqual(range.to);
      expect(workers.filter((worker) => overlap(block, worker))).toEqual([]);
    }
    expect(new Set(others.map((b) => b.from)).size).toBe(16);
  });

  it("stays inside a small range, in two blocks at least", () => {
    const small = { from: 61_000, to: 61_300 };
    const [worker, other] = [portBlock(small, { poolId: 1, pid: 7 }), portBlock(small, { poolId: undefined, pid: 7 })];
    expect([worker, other]).toEqual([
      { from: 61_000, to: 61_150 },
      { from: 61_150, to: 61_300 },
    ]);
  });
});
