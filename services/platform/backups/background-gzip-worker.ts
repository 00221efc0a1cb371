// A thread of BackgroundGzip: gzips the blocks it is sent, at a low
// scheduling priority where the system lets a thread have its own.
import { readlinkSync } from "node:fs";
import os from "node:os";
import { parentPort } from "node:worker_threads";
import { gzipSync } from "node:zlib";
import type { GzipBlock, GzippedBlock } from "./background-gzip.ts";

/** The niceness of the thread: the lowest, so that it runs on what the tenants served leave of the CPU. */
const niceness = 19;

try {
  // Linux: /proc/thread-self names this thread, whose own niceness setpriority(2) then sets.
  const thread = Number(readlinkSync("/proc/thread-self").split("/").at(-1));
  os.setPriority(thread, niceness);
} catch {
  // Elsewhere the thread runs at the process's priority.
}

parentPort!.on("message", ({ id, block, length }: GzipBlock) => {
  let answer: GzippedBlock;
  try {
    const member = gzipSync(new Uint8Array(block, 0, length), { level: 1 });
    // The member's own memory, handed back without a copy.
    const owned = member.byteOffset === 0 && member.byteLength === member.buffer.byteLength ? member.buffer : member.buffer.slice(member.byteOffset, member.byteOffset + member.byteLength);
    answer = { id, member: owned as ArrayBuffer, block };
    parentPort!.postMessage(answer, [owned as ArrayBuffer, block]);
  } catch (error) {
    answer = { id, error: (error as Error).message };
    parentPort!.postMessage(answer);
  }
});
