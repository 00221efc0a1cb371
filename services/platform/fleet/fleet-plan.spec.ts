import { describe, expect, it } from "vitest";
import type { LedgerEntry, LedgerTenant } from "../stores/index.ts";
import { planFleetMigration, runPoolBatches } from "./fleet-plan.ts";

const latest = new Map([
  ["auth", "0003"],
  ["backend", "0007"],
]);
const services = ["auth", "backend"];
const succeeded = (version: string, permissionsDigest: string | null = null): LedgerEntry => ({ version, state: "succeeded", permissionsDigest });

/** Tenants by id, in order, as the ledger store reads them. */
const ledger = new Map<string, LedgerTenant>([
  ["a", { cluster: "one", entries: new Map([["auth", succeeded("0003")], ["backend", succeeded("0007")]]) }],
  ["b", { cluster: "two", entries: new Map([["auth", succeeded("0003")], ["backend", succeeded("0006")]]) }],
  ["c", { cluster: "one", entries: new Map([["auth", succeeded("0003")], ["backend", { version: "0006", state: "failed", permissionsDigest: null }]]) }],
  ["d", { cluster: "one", entries: new Map<string, LedgerEntry>() }],
]);

const behind = (plan: ReturnType<typeof planFleetMigration>) =>
  [...plan.groups.values()].flatMap((g) => g.tenants).flat().filter((p) => p.behind).map((p) => `${p.tenantId} ${p.service} from ${p.from || "nothing"}`);

describe("fleet plan", () => {
  it("finds from the ledger alone who is behind: an older version, a failed attempt, nothing recorded", () => {
    expect(behind(planFleetMigration(ledger, services, latest, false)).sort()).toEqual([
      "b backend from 0006",
      "c backend from 0006",
      "d auth from nothing",
      "d backend from nothing",
    ]);
  });

  it("takes every tenant × service, grouped by cluster in the ledger's order", () => {
    const plan = planFleetMigration(ledger, services, latest, false);
    expect(plan.total).toBe(8);
    expect([...plan.groups].map(([key, { tenants }]) => [key, tenants.map((pairs) => pairs[0]!.tenantId)])).toEqual([
      ["one", ["a", "c", "d"]],
      ["two", ["b"]],
    ]);
  });

  it("groups pooled tenants by their pool database, apart from their cluster's dedicated tenants", () => {
    const mixed = new Map<string, LedgerTenant>([
      ...ledger,
      ["p1", { cluster: "one", poolDatabase: "pool_1", entries: new Map() }],
      ["p2", { cluster: "one", poolDatabase: "pool_2", entries: new Map() }],
      ["p3", { cluster: "one", poolDatabase: "pool_1", entries: new Map() }],
    ]);
    const plan = planFleetMigration(mixed, services, latest, true);
    expect([...plan.groups].map(([key, { cluster, poolDatabase, tenants }]) => [key, cluster, poolDatabase, tenants.map((pairs) => pairs[0]!.tenantId)])).toEqual([
      ["two", "two", undefined, ["b"]],
      ["one", "one", undefined, ["c", "d"]],
      ["one/pool_1", "one", "pool_1", ["p1", "p3"]],
      ["one/pool_2", "one", "pool_2", ["p2"]],
    ]);
  });

  it("with onlyBehind leaves out what is current, and tenants with nothing behind", () => {
    const plan = planFleetMigration(ledger, services, latest, true);
    expect(plan.total).toBe(4);
    expect(plan.groups.get("one")!.tenants.map((pairs) => pairs.map((p) => `${p.tenantId} ${p.service}`))).toEqual([["c backend"], ["d auth", "d backend"]]);
  });

  it("takes Auth as behind where the catalog it last merged is not the current one, whatever its version", () => {
    const catalogLedger = new Map([
      ["merged", { cluster: "one", entries: new Map([["auth", succeeded("0003", "current")], ["backend", succeeded("0007", "current")]]) }],
      ["older", { cluster: "one", entries: new Map([["auth", succeeded("0003", "older")], ["backend", succeeded("0007")]]) }],
      ["never", { cluster: "one", entries: new Map([["auth", succeeded("0003")], ["backend", succeeded("0007")]]) }],
    ]);
    expect(behind(planFleetMigration(catalogLedger, services, latest, true, { service: "auth", digest: "current" }))).toEqual([
      "older auth from 0003",
      "never auth from 0003",
    ]);
    expect(planFleetMigration(catalogLedger, services, latest, true).total).toBe(0);
  });

  it("takes a service whose newest version is unknown as behind on every tenant", () => {
    expect(planFleetMigration(ledger, ["auth"], new Map(), true).total).toBe(ledger.size);
  });
});

describe("pool batches", () => {
  /** Runs `pools` (tenant counts) through runPoolBatches, each batch held until the test lets it go; what ran, and how many at once. */
  async function spreadOf(counts: number[], spread: { perPool: number; total: number; maxBatch: number }, stopAfter = Infinity) {
    const pools = counts.map((n, p) => Array.from({ length: n }, (_, i) => `${p}/${i}`));
    const running = new Map<number, number>();
    const batches: string[][] = [];
    let atOnce = 0;
    let peakByPool = counts.map(() => 0);
    const done = runPoolBatches(pools, { ...spread, stopped: () => batches.length >= stopAfter }, async (batch) => {
      const pool = Number(batch[0]!.split("/")[0]);
      batches.push(batch);
      running.set(pool, (running.get(pool) ?? 0) + 1);
      atOnce = Math.max(atOnce, [...running.values()].reduce((n, r) => n + r, 0));
      peakByPool = peakByPool.map((peak, p) => Math.max(peak, running.get(p) ?? 0));
      // Let every other batch that can start start before this one ends.
      await new Promise((resolve) => setImmediate(resolve));
      running.set(pool, running.get(pool)! - 1);
    });
    await done;
    return { batches, atOnce, peakByPool };
  }

  it("runs every tenant once, no more batches at once than the total, spread evenly over the pool databases", async () => {
    const { batches, atOnce, peakByPool } = await spreadOf([300, 300, 300, 300, 300, 300, 300, 300, 300, 300], { perPool: 8, total: 16, maxBatch: 50 });
    expect(batches.flat().sort()).toEqual(Array.from({ length: 10 }, (_, p) => Array.from({ length: 300 }, (_, i) => `${p}/${i}`)).flat().sort());
    // Each pool database's tenants in batches that 8 at once would take (300 / 8, rounded up).
    expect(Math.max(...batches.map((b) => b.length))).toBe(38);
    expect(atOnce).toBe(16);
    expect(Math.max(...peakByPool)).toBe(2);
  });

  it("gives no pool database more than its width, whatever the total", async () => {
    const { atOnce, peakByPool } = await spreadOf([400, 400], { perPool: 8, total: 32, maxBatch: 50 });
    expect(atOnce).toBe(16);
    expect(peakByPool).toEqual([8, 8]);
  });

  it("cuts no batch larger than the most a batch takes", async () => {
    const { batches } = await spreadOf([1000], { perPool: 2, total: 16, maxBatch: 50 });
    expect(batches).toHaveLength(20);
    expect(batches.every((b) => b.length === 50)).toBe(true);
  });

  it("takes no batch once stopped", async () => {
    const { batches } = await spreadOf([300, 300], { perPool: 8, total: 16, maxBatch: 10 }, 5);
    expect(batches.length).toBeLessThan(60);
    expect(batches.length).toBeGreaterThanOrEqual(5);
  });
});
