import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
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

  it("prefetches the routes it lacks in one ask, keeps none of a tenant that changed meanwhile, and lets each lookup ask when the prefetch fails", async () => {
    const routeOf = (tenantId: string, database: string) => create(TenantRouteSchema, { tenantId, status: TenantStatus.ACTIVE, database });
    const single: string[] = [];
    const batches: { ids: string[]; answer: (routes: TenantRoute[] | Error) => void }[] = [];
    const directory = new TenantDirectory({
      resolve: async (tenantId) => {
        single.push(tenantId);
        return routeOf(tenantId, "asked alone");
      },
      resolveMany: (ids) => new Promise<TenantRoute[]>((resolve, reject) => batches.push({ ids, answer: (routes) => (routes instanceof Error ? reject(routes) : resolve(routes)) })),
      maxEntries: 10,
      ttlMs: 60_000,
    });
    directory.setWatching(true);
    await directory.lookup("cached");
    const prefetched = directory.prefetch(["cached", "first", "second", "changed", "unknown"]);
    // Only those it lacks are asked for.
    expect(batches.map((b) => b.ids)).toEqual([["first", "second", "changed", "unknown"]]);
    directory.invalidate("changed");
    batches[0]!.answer(["first", "second", "changed"].map((id) => routeOf(id, "prefetched")));
    await prefetched;
    expect((await directory.lookup("first")).database).toBe("prefetched");
    expect((await directory.lookup("second")).database).toBe("prefetched");
    expect((await directory.lookup("changed")).database).toBe("asked alone");
    expect((await directory.lookup("unknown")).database).toBe("asked alone");
    expect(single).toEqual(["cached", "changed", "unknown"]);

    const failed = directory.prefetch(["third"]);
    batches[1]!.answer(new Error("Platform is unreachable"));
    await failed;
    expect((await directory.lookup("third")).database).toBe("asked alone");
  });

  it("asks for the tenants looked up in the same turn in one ResolveTenants, and for those it leaves out, or when it fails, one by one", async () => {
    const routeOf = (tenantId: string, database: string) => create(TenantRouteSchema, { tenantId, status: TenantStatus.ACTIVE, database });
    const single: string[] = [];
    const batches: { ids: string[]; answer: (routes: TenantRoute[] | Error) => void }[] = [];
    const directory = new TenantDirectory({
      resolve: async (tenantId) => {
        single.push(tenantId);
        if (tenantId.startsWith("unknown")) {
          throw new ConnectError(`tenant "${tenantId}" not found`, Code.NotFound);
        }
        return routeOf(tenantId, "asked alone");
      },
      resolveMany: (ids) => new Promise<TenantRoute[]>((resolve, reject) => batches.push({ ids, answer: (routes) => (routes instanceof Error ? reject(routes) : resolve(routes)) })),
      maxEntries: 20,
      ttlMs: 60_000,
    });
    directory.setWatching(true);
    const turn = () => new Promise((resolve) => setImmediate(resolve));

    const first = ["acme", "bolt", "acme", "unknown-1"].map((id) => directory.resolveActive(id).then((r) => r.database, (e: unknown) => ConnectError.from(e).code));
    await turn();
    expect(batches.map((b) => b.ids)).toEqual([["acme", "bolt", "unknown-1"]]);
    batches[0]!.answer([routeOf("acme", "together"), routeOf("bolt", "together")]);
    expect(await Promise.all(first)).toEqual(["together", "together", "together", Code.NotFound]);
    expect(single).toEqual(["unknown-1"]);
    // Kept: asked for no more.
    expect((await directory.lookup("bolt")).database).toBe("together");

    // One tenant alone is asked for with ResolveTenant.
    expect((await directory.lookup("core")).database).toBe("asked alone");
    expect(batches).toHaveLength(1);

    // Platform unreachable: every lookup of the batch fails as it would have alone, none asked again.
    const unreachable = ["dune", "echo"].map((id) => directory.lookup(id).catch((e: unknown) => ConnectError.from(e).code));
    await turn();
    batches[1]!.answer(new ConnectError("connection refused", Code.Unavailable));
    expect(await Promise.all(unreachable)).toEqual([Code.Unavailable, Code.Unavailable]);
    expect(single).toEqual(["unknown-1", "core"]);

    // Any other failure (a Platform without ResolveTenants): each is asked for alone.
    const refused = ["fern", "gale"].map((id) => directory.lookup(id).then((r) => r.database));
    await turn();
    batches[2]!.answer(new ConnectError("no such method", Code.Unimplemented));
    expect(await Promise.all(refused)).toEqual(["asked alone", "asked alone"]);
    expect(single).toEqual(["unknown-1", "core", "fern", "gale"]);
  });
});
