import { afterAll, describe, expect, it } from "vitest";
import type { LoaderAnswer } from "./table-loader.ts";
import { WarmThreads } from "./warm-threads.ts";

// A loader's thread answers "close" without a connection: enough to see that a thread taken again still hears and answers.
const threads = new WarmThreads(new URL("./table-loader-worker.ts", import.meta.url), 1);
const started: { threadId: number; terminate: () => Promise<number> }[] = [];

afterAll(async () => {
  await Promise.all(started.map((worker) => worker.terminate()));
});

/** Takes a thread, has it answer once, and gives it back; its id. */
async function useOnce(): Promise<number> {
  let answered: (answer: LoaderAnswer) => void = () => {};
  const answer = new Promise<LoaderAnswer>((resolve) => (answered = resolve));
  const worker = threads.take<LoaderAnswer>({ message: (m) => answered(m), ended: () => answered({ type: "failed", message: "ended" }) });
  started.push(worker);
  worker.postMessage({ type: "close" });
  expect(await answer).toEqual({ type: "closed" });
  threads.give(worker);
  return worker.threadId;
}

describe("warm threads", () => {
  it("hand the same thread out again once given back, still answering its new user", async () => {
    const first = await useOnce();
    expect(await useOnce()).toBe(first);
    expect(await useOnce()).toBe(first);
  });

  it("start another while the kept one is in use", async () => {
    const kept = threads.take<LoaderAnswer>({ message: () => {}, ended: () => {} });
    started.push(kept);
    const other = await useOnce();
    expect(other).not.toBe(kept.threadId);
    threads.give(kept);
  });
});
