// A thread of TableReader: at the lowest scheduling priority where the
// system lets a thread have its own, set before anything else is loaded
// (its modules too are loaded on what the tenants served leave of the
// CPU), then reading a backup's tables (table-reader-thread.ts).
import { execFileSync } from "node:child_process";
import { readlinkSync } from "node:fs";
import os from "node:os";

/** The niceness of the thread: the lowest, so that it runs on what the tenants served leave of the CPU. */
const niceness = 19;

try {
  // Linux: /proc/thread-self names this thread, whose own niceness setpriority(2) then sets.
  const thread = Number(readlinkSync("/proc/thread-self").split("/").at(-1));
  os.setPriority(thread, niceness);
  try {
    // And its policy SCHED_IDLE (util-linux's chrt; Node has no sched_setscheduler): a niced thread still
    // keeps a core for the rest of its time slice when a tenant's call wakes up; an idle one gives it up at once.
    execFileSync("chrt", ["--idle", "--pid", "0", String(thread)], { stdio: "ignore", timeout: 5000 });
  } catch {
    // Without chrt the thread stays niced only.
  }
} catch {
  // Elsewhere the thread runs at the process's priority.
}

await import("./table-reader-thread.ts");
