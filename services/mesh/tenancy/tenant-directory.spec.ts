import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { TenantRouteSchema } from "../../../gen/tenantry/platform/v1/platform_service_pb.js";
import { TenantDirectory, TenantStatus, type TenantRoute } from "./tenant-directory.ts";

const route = (database: string) => create(TenantRouteSchema, { tenantId: "acme", status: TenantStatus.ACTIVE, database });

/** A directory whose Platform answers each ask only when the test says so, with the route the test gives. */
function directoryWithPlatform() {
  const asks: ((route: TenantRoute) => void)[] = [];
  const directory = new TenantDirectory({
    resolve: () => new Promise<TenantRoute>((resolve) => asks.push(resolve)),
    maxEntries: 10,
    ttlMs: 60_000,
  });
  directory.setWatching(true);
  return { directory, asks };
}

describe("a tenant directory", () => {
  it("asks Platform once for calls that come together, and keeps the answer", async () => {
    const { directory, asks } = directoryWithPlatform();
    const first = directory.lookup("acme");
    const second = directory.lookup("acme");
    expect(asks).toHaveLength(1);
    asks[0]!(route("source"));
    expect([(await first).database, (await second).database]).toEqual(["source", "source"]);
    expect((await directory.lookup("acme")).database).toBe("source");
    expect(asks).toHaveLength(1);
  });

  it("does not keep an answer Platform gave while the tenant changed, nor give it to calls after the change", async () => {
    const { directory, asks } = directoryWithPlatform();
    const before = directory.lookup("acme");
    // The tenant changes (a move switches its database) while Platform is answering with what it read before.
    directory.invalidate("acme");
    const after = directory.lookup("acme");
    expect(asks).toHaveLength(2);
    asks[0]!(route("source"));
    asks[1]!(route("target"));
    expect((await before).database).toBe("source");
    expect((await after).database).toBe("target");
    expect((await directory.lookup("acme")).database).toBe("target");
    expect(asks).toHaveLength(2);
  });

  it("asks again after a change whose answer came in late", async () => {
    const { directory, asks } = directoryWithPlatform();
    const before = directory.lookup("acme");
    directory.invalidate("acme");
    asks[0]!(route("source"));
    expect((await before).database).toBe("source");
    const after = directory.lookup("acme");
    expect(asks).toHaveLength(2);
    asks[1]!(route("target"));
    expect((await after).database).toBe("target");
  });
});
