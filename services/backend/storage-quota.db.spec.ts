import { Code, ConnectError } from "@connectrpc/connect";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Tier } from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import { placements } from "../testing/placements.ts";
import { startSingleBackend, type SingleBackend } from "../testing/single-service.ts";

const limit = 12 * 1024 * 1024;
let backend: SingleBackend;
beforeAll(async () => {
  backend = await startSingleBackend({ env: { TENANTRY_STORAGE_CHECK_INTERVAL_MS: "200" } });
});
afterAll(() => backend?.stop());

async function code(call: Promise<unknown>): Promise<string> {
  return call.then(() => "ok", (e: unknown) => Code[ConnectError.from(e).code]);
}

// A dedicated tenant's storage is its database's size; a pooled tenant's, what its role owns in the pool database.
describe.each(placements)("storage limit ($name tenants)", ({ placement }) => {
  it("refuses writes with RESOURCE_EXHAUSTED once the tenant stores more than the tier's storage, and lifts it with the tier", async () => {
    const tenant = await backend.createTenant({ maxStorageBytes: limit, placement });
    const headers = { headers: { "x-tenant-id": tenant.tenantId } };
    // The first write measures the tenant, and finds it under its limit.
    const { entry } = await backend.entries.createEntry({ title: "before" }, headers);

    // Fill the tenant's schema past the limit behind Backend's back, as the tenant.
    await backend.sqlAs(tenant, "create table ballast as select i, repeat(md5(i::text), 40) as filler from generate_series(1, 12000) i");
    await backend.sqlAs(tenant, "vacuum ballast");
    let outcome = "ok";
    const deadline = Date.now() + 10_000;
    while (outcome === "ok" && Date.now() < deadline) {
      outcome = await code(backend.entries.createEntry({ title: "filling" }, headers));
      await sleep(100);
    }
    expect(outcome).toBe("ResourceExhausted");
    const error = await backend.entries.createEntry({ title: "refused" }, headers).catch((e: unknown) => ConnectError.from(e));
    expect((error as ConnectError).rawMessage).toMatch(/over the 12\.0 MB its tier allows/);
    expect(await code(backend.entries.updateEntry({ id: entry!.id, title: "changed", updateMask: { paths: ["title"] } }, headers))).toBe("ResourceExhausted");
    // Reading and deleting go on.
    expect(await code(backend.entries.getEntry({ id: entry!.id }, headers))).toBe("ok");
    expect(await code(backend.entries.deleteEntry({ id: entry!.id }, headers))).toBe("ok");
    // Nothing refused was written.
    expect(await backend.sqlAs(tenant, "select 1 from entries where title in ('refused', 'changed')")).toEqual([]);

    // Another tier, another limit: the change reaches Backend through the feed.
    backend.changeTenant(tenant.tenantId, { tier: Tier.ENTERPRISE, maxStorageBytes: 0n });
    const until = Date.now() + 5000;
    while ((outcome = await code(backend.entries.createEntry({ title: "after upgrade" }, headers))) !== "ok" && Date.now() < until) {
      await sleep(50);
    }
    expect(outcome).toBe("ok");
  });

  it("does not touch tenants under their limit", async () => {
    const tenant = await backend.createTenant({ maxStorageBytes: limit, placement });
    for (let i = 0; i < 3; i++) {
      expect(await code(backend.entries.createEntry({ title: `entry ${i}` }, { headers: { "x-tenant-id": tenant.tenantId } }))).toBe("ok");
    }
  });
});
