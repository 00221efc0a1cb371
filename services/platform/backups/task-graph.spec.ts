import { describe, expect, it } from "vitest";
import { runTaskGraph, type Task } from "./task-graph.ts";

/** A task that records when it starts and ends on which worker, and waits for `gate` to end. */
function recorder(log: string[]) {
  return (name: string, priority: number, after: Task<string>[] = [], fail = false): Task<string> => ({
    name,
    priority,
    after,
    async run(worker) {
      log.push(`${worker}+${name}`);
      await new Promise((resolve) => setImmediate(resolve));
      log.push(`${worker}-${name}`);
      if (fail) {
        throw new Error(`${name} failed`);
      }
    },
  });
}

describe("a task graph", () => {
  it("runs each task once the tasks it waits for are done, the ready task of lowest priority first", async () => {
    const log: string[] = [];
    const task = recorder(log);
    const copyBig = task("copy big", 0);
    const copySmall = task("copy small", 1);
    const indexA = task("index a", 0, [copyBig]);
    const indexB = task("index b", 0, [copyBig]);
    const analyzeBig = task("analyze big", 0, [indexA, indexB]);
    const analyzeSmall = task("analyze small", 1, [copySmall]);
    const last = task("foreign keys", 2, [analyzeBig, analyzeSmall]);
    await runTaskGraph(["w1", "w2"], [last, analyzeSmall, analyzeBig, indexB, indexA, copySmall, copyBig]);
    const at = (entry: string) => log.indexOf(entry);
    const ends = (name: string) => Math.max(at(`w1-${name}`), at(`w2-${name}`));
    const starts = (name: string) => Math.max(at(`w1+${name}`), at(`w2+${name}`));
    expect(log.filter((e) => e.includes("+"))).toHaveLength(7);
    expect(log.slice(0, 2).sort()).toEqual(["w1+copy big", "w2+copy small"]);
    for (const [before, after] of [["copy big", "index a"], ["copy big", "index b"], ["index a", "analyze big"], ["index b", "analyze big"], ["copy small", "analyze small"], ["analyze big", "foreign keys"], ["analyze small", "foreign keys"]]) {
      expect(ends(before!), `${before} ends before ${after} starts`).toBeLessThan(starts(after!));
    }
    // Both indexes of the big table run at once, one on each worker.
    expect(starts("index b")).toBeLessThan(ends("index a"));
  });

  it("starts nothing after a failure and throws it once the tasks under way have ended", async () => {
    const log: string[] = [];
    const task = recorder(log);
    const failing = task("copy a", 0, [], true);
    const slow: Task<string> = {
      name: "copy b",
      priority: 1,
      async run(worker) {
        log.push(`${worker}+copy b`);
        await new Promise((resolve) => setTimeout(resolve, 20));
        log.push(`${worker}-copy b`);
      },
    };
    const later = task("index a", 0, [failing]);
    const afterB = task("index b", 0, [slow]);
    await expect(runTaskGraph(["w1", "w2"], [failing, slow, later, afterB])).rejects.toThrow("copy a failed");
    expect(log.filter((e) => e.includes("index"))).toEqual([]);
    expect(log).toContain("w2-copy b");
  });

  it("refuses tasks that wait for one another", async () => {
    const waitsFor: Task<string>[] = [];
    const a: Task<string> = { name: "a", priority: 0, after: waitsFor, run: async () => {} };
    const b: Task<string> = { name: "b", priority: 0, after: [a], run: async () => {} };
    const c: Task<string> = { name: "c", priority: 0, run: async () => {} };
    waitsFor.push(b);
    await expect(runTaskGraph(["w"], [a, b])).rejects.toThrow(/wait for one another/);
    await expect(runTaskGraph(["w"], [c, a, b])).rejects.toThrow(/a, b never started|b, a never started/);
  });
});
