import { Code, ConnectError } from "@connectrpc/connect";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Placement } from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import { startSingleBackend, type SingleBackend } from "../testing/single-service.ts";

/**
 * What only the pooled placement has: neighbours in one pool database, and a
 * pool database larger than any one tenant. The rest of Backend's specs run
 * in both placements (entry-service.db.spec.ts, storage-quota.db.spec.ts).
 */
let backend: SingleBackend;
beforeAll(async () => {
  backend = await startSingleBackend({ env: { TENANTRY_STORAGE_CHECK_INTERVAL_MS: "200" } });
});
afterAll(() => backend?.stop());

const as = (tenantId: string) => ({ headers: { "x-tenant-id": tenantId } });
const pooled = { placement: Placement.POOLED };

async function codeOf(call: Promise<unknown>): Promise<string> {
  return call.then(
    () => "ok",
    (e: unknown) => Code[ConnectError.from(e).code],
  );
}

describe("backend with pooled tenants", () => {
  it("keeps each pooled tenant's entries in its own schema of the shared pool database, apart from its neighbours and from a dedicated tenant", async () => {
    const [a, b, dedicated] = [await backend.createTenant(pooled), await backend.createTenant(pooled), await backend.createTenant()];
    expect(a.database).toBe(b.database);
    const created = new Map<string, string>();
    for (const t of [a, b, dedicated]) {
      const { entry } = await backend.entries.createEntry({ title: `only in ${t.tenantId}`, tags: ["x"] }, as(t.tenantId));
      created.set(t.tenantId, entry!.id);
    }
    for (const t of [a, b, dedicated]) {
      expect((await backend.entries.listEntries({}, as(t.tenantId))).entries.map((e) => e.title)).toEqual([`only in ${t.tenantId}`]);
      expect((await backend.entries.getEntry({ id: created.get(t.tenantId)! }, as(t.tenantId))).entry?.title).toBe(`only in ${t.tenantId}`);
      expect(await backend.sqlAs(t, "select title from entries")).toEqual([{ title: `only in ${t.tenantId}` }]);
    }
    expect(await codeOf(backend.entries.getEntry({ id: created.get(a.tenantId)! }, as(b.tenantId)))).toBe("NotFound");
    expect(await backend.sql(a.database, "select schemaname, tableowner from pg_tables where tablename = 'entries' order by 1")).toEqual(
      [a, b].map((t) => ({ schemaname: `${t.schemaPrefix}backend`, tableowner: t.sessionRole })).sort((x, y) => x.schemaname.localeCompare(y.schemaname)),
    );
  });

  it("holds a pooled tenant to its storage limit by what it stores, not by the pool database's size", async () => {
    const limit = 1024 * 1024;
    const [full, neighbour] = [await backend.createTenant({ ...pooled, maxStorageBytes: limit }), await backend.createTenant({ ...pooled, maxStorageBytes: limit })];
    const [{ bytes }] = (await backend.sql<{ bytes: string }>(full.database, "select pg_database_size(current_database()) as bytes")) as [{ bytes: string }];
    expect(Number(bytes)).toBeGreaterThan(limit);
    expect(await codeOf(backend.entries.createEntry({ title: "under the limit" }, as(full.tenantId)))).toBe("ok");

    // The tenant's own schema filled past its limit behind Backend's back.
    await backend.sqlAs(full, "create table ballast as select i, repeat(md5(i::text), 40) as filler from generate_series(1, 1500) i");
    let outcome = "ok";
    const deadline = Date.now() + 10_000;
    while (outcome === "ok" && Date.now() < deadline) {
      outcome = await codeOf(backend.entries.createEntry({ title: "filling" }, as(full.tenantId)));
      await sleep(100);
    }
    expect(outcome).toBe("ResourceExhausted");
    expect(await codeOf(backend.entries.createEntry({ title: "next door" }, as(neighbour.tenantId)))).toBe("ok");
  });
});
