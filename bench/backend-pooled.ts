// Backend for the pooled benchmark (npm run bench:pooled): the real Backend,
// its routes from Platform, but users' tokens verified against a key set
// made here for each tenant (the bench's public key, `kid` the tenant id),
// so that tokens for 10,000 tenants need no 10,000 logins. Each key set is
// made afresh on each request, as if it came over the wire from Auth. With
// BENCH_NEXT_MIGRATION=1 it has one more migration (a fleet migration rolls
// it out). On SIGUSR2 it collects garbage (node --expose-gc) and prints its
// memory as one JSON line, then, with BENCH_HEAP_SNAPSHOTS=<folder>, writes
// a heap snapshot there. Never deploy.
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { getHeapSpaceStatistics, getHeapStatistics, writeHeapSnapshot } from "node:v8";
import { runMain } from "../services/mesh/run-main.ts";

/** The permissions of a tenant's catalog, as Auth would list them. */
const catalog = ["entries.read", "entries.write", "users.read", "users.write", "roles.read", "roles.write"];

let snapshots = 0;
process.on("SIGUSR2", () => {
  // All the garbage there is, and the pages it held given back, as V8 does when memory runs out.
  (globalThis as { gc?: (options: object) => void }).gc?.({ type: "major", execution: "sync", flavor: "last-resort" });
  const heap = getHeapStatistics();
  // What each space of the heap holds and what it keeps of the system's memory (the young generation's may be most of the difference).
  const spaces = Object.fromEntries(getHeapSpaceStatistics().map((s) => [s.space_name, { used: s.space_used_size, physical: s.physical_space_size }]));
  // Resident memory by kind (Linux): anonymous (heap, malloc, stacks) and file-backed (the node binary's pages, touched as code runs).
  const status = existsSync("/proc/self/status") ? readFileSync("/proc/self/status", "utf8") : "";
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? 0) * 1024;
  process.stdout.write(`${JSON.stringify({ memory: { ...process.memoryUsage(), mallocedMemory: heap.malloced_memory, heapCommitted: heap.total_physical_size, spaces, rssAnon: kb("RssAnon"), rssFile: kb("RssFile") } })}\n`);
  if (process.env.BENCH_HEAP_SNAPSHOTS !== undefined) {
    writeHeapSnapshot(path.join(process.env.BENCH_HEAP_SNAPSHOTS, `backend-${process.pid}-${++snapshots}.heapsnapshot`));
  }
});

await runMain("backend", async (log, telemetry) => {
  const { Migration } = await import("@mikro-orm/migrations");
  const { UserTokens } = await import("../services/mesh/index.ts");
  const { startBackend } = await import("../services/backend/backend.ts");
  const { readBackendConfig } = await import("../services/backend/config.ts");
  const { migrations } = await import("../services/backend/migrations/index.ts");
  const publicKey = JSON.parse(process.env.BENCH_PUBLIC_JWK!) as object;
  const userTokens = new UserTokens({
    issuer: "tenantry",
    // Strings of their own, as decoded from Auth's answer.
    fetchKeySet: async (tenantId) => ({
      jwks: JSON.stringify({ keys: [{ ...publicKey, kid: tenantId, alg: "EdDSA", use: "sig" }] }),
      permissions: catalog.map((name) => Buffer.from(name).toString()),
    }),
  });
  class AddEntrySummaries extends Migration {
    override up(): void {
      this.addSql("alter table entries add column summary text");
    }
  }
  const next = [...migrations, { name: `${String(migrations.length + 1).padStart(4, "0")}-add-entry-summaries`, class: AddEntrySummaries }];
  return startBackend(readBackendConfig(), log, telemetry, { userTokens, ...(process.env.BENCH_NEXT_MIGRATION === "1" ? { migrations: next } : {}) });
});
