// npm run bench: every benchmark in turn, each in a process of its own and
// each ending with one table per goal, the goal beside the figure.
//   --profile        profile Backend's CPU during GetEntry (see bench:get-entry)
//   --only a,b       only these: get-entry, memory, provisioning, fleet, telemetry, restart, backup, move, cold-tenants
// Each benchmark's own variables apply (see the head of its file).
import { spawn } from "node:child_process";
import { once } from "node:events";
import path from "node:path";
import { parseArgs } from "node:util";
import { root } from "./bench-processes.ts";

const benchmarks = {
  "get-entry": "bench/get-entry.ts",
  memory: "bench/memory.ts",
  provisioning: "bench/provisioning.ts",
  fleet: "bench/fleet.ts",
  telemetry: "bench/telemetry.ts",
  restart: "bench/database-restart.ts",
  backup: "bench/backup.ts",
  move: "bench/move.ts",
  "cold-tenants": "bench/cold-tenants.ts",
};
type Name = keyof typeof benchmarks;

const { values: flags } = parseArgs({ options: { profile: { type: "boolean", default: false }, only: { type: "string" } } });
const names = (flags.only?.split(",") ?? Object.keys(benchmarks)) as Name[];
const unknown = names.filter((name) => !(name in benchmarks));
if (unknown.length > 0) {
  process.stderr.write(`unknown benchmark ${unknown.join(", ")}: choose among ${Object.keys(benchmarks).join(", ")}\n`);
  process.exit(2);
}
const failed: string[] = [];
for (const name of names) {
  process.stdout.write(`\n## ${name}\n`);
  const args = name === "get-entry" && flags.profile ? ["--profile"] : [];
  const child = spawn(process.execPath, [path.join(root, benchmarks[name]), ...args], { stdio: "inherit" });
  const [code] = (await once(child, "exit")) as [number | null];
  if (code !== 0) {
    failed.push(name);
  }
}
if (failed.length > 0) {
  process.stderr.write(`\nfailed: ${failed.join(", ")}\n`);
  process.exit(1);
}
