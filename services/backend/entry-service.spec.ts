import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestMesh, type TestMesh } from "../testing/test-mesh.ts";

let mesh: TestMesh;
beforeAll(async () => {
  mesh = await startTestMesh();
});
afterAll(() => mesh?.stop());

const as = (tenantId: string) => ({ headers: { "x-tenant-id": tenantId } });

async function codeOf(call: Promise<unknown>): Promise<{ code: Code; message: string }> {
  try {
    await call;
  } catch (error) {
    const e = ConnectError.from(error);
    return { code: e.code, message: e.rawMessage };
  }
  throw new Error("expected the call to fail");
}

describe("entry service", () => {
  it("keeps each tenant's entries in that tenant's own database", async () => {
    const a = await mesh.createTenant();
    const b = await mesh.createTenant();
    const { entry: ea } = await mesh.entries.createEntry({ title: "only in a", tags: ["x"] }, as(a.tenantId));
    const { entry: eb } = await mesh.entries.createEntry({ title: "only in b" }, as(b.tenantId));

    const listA = await mesh.entries.listEntries({}, as(a.tenantId));
    const listB = await mesh.entries.listEntries({}, as(b.tenantId));
    expect(listA.entries.map((e) => e.title)).toEqual(["only in a"]);
    expect(listB.entries.map((e) => e.title)).toEqual(["only in b"]);
    expect((await codeOf(mesh.entries.getEntry({ id: ea!.id }, as(b.tenantId)))).code).toBe(Code.NotFound);

    const rowsA = await mesh.sql<{ id: string; title: string }>(a.database, "select id, title from backend.entries");
    const rowsB = await mesh.sql<{ id: string; title: string }>(b.database, "select id, title from backend.entries");
    expect(rowsA).toEqual([{ id: ea!.id, title: "only in a" }]);
    expect(rowsB).toEqual([{ id: eb!.id, title: "only in b" }]);
  });

  it("creates, reads, updates with an etag, lists by tag and deletes", async () => {
    const t = await mesh.createTenant();
    const { entry } = await mesh.entries.createEntry({ title: "first", body: "text", tags: ["a", "b", "a"] }, as(t.tenantId));
    expect(entry).toMatchObject({ title: "first", body: "text", tags: ["a", "b"], etag: "1" });
    expect((await mesh.entries.getEntry({ id: entry!.id }, as(t.tenantId))).entry?.title).toBe("first");

    const { entry: updated } = await mesh.entries.updateEntry(
      { id: entry!.id, title: "renamed", updateMask: { paths: ["title"] }, etag: entry!.etag },
      as(t.tenantId),
    );
    expect(updated).toMatchObject({ title: "renamed", body: "text", etag: "2" });

    const stale = await codeOf(
      mesh.entries.updateEntry({ id: entry!.id, body: "lost", updateMask: { paths: ["body"] }, etag: entry!.etag }, as(t.tenantId)),
    );
    expect(stale.code).toBe(Code.Aborted);
    expect((await mesh.entries.getEntry({ id: entry!.id }, as(t.tenantId))).entry?.body).toBe("text");

    await mesh.entries.createEntry({ title: "second", tags: ["b"] }, as(t.tenantId));
    await mesh.entries.createEntry({ title: "third" }, as(t.tenantId));
    const tagged = await mesh.entries.listEntries({ tag: "b" }, as(t.tenantId));
    expect(tagged.entries.map((e) => e.title)).toEqual(["second", "renamed"]);

    await mesh.entries.deleteEntry({ id: entry!.id }, as(t.tenantId));
    expect((await codeOf(mesh.entries.getEntry({ id: entry!.id }, as(t.tenantId)))).code).toBe(Code.NotFound);
    expect((await codeOf(mesh.entries.deleteEntry({ id: entry!.id }, as(t.tenantId)))).code).toBe(Code.NotFound);
  });

  it("pages through entries newest first without gaps or repeats", async () => {
    const t = await mesh.createTenant();
    const titles: string[] = [];
    for (let i = 0; i < 23; i++) {
      titles.push(`entry ${i}`);
      await mesh.entries.createEntry({ title: `entry ${i}` }, as(t.tenantId));
    }
    const seen: string[] = [];
    let pageToken = "";
    do {
      const page = await mesh.entries.listEntries({ pageSize: 5, pageToken }, as(t.tenantId));
      expect(page.entries.length).toBeLessThanOrEqual(5);
      seen.push(...page.entries.map((e) => e.title));
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    expect(seen).toEqual(titles.reverse());
  });
});

describe("bad input", () => {
  it("refuses a missing, malformed or unknown tenant id with its own code", async () => {
    const missing = await codeOf(mesh.entries.listEntries({}));
    expect(missing.code).toBe(Code.InvalidArgument);
    expect(missing.message).toMatch(/missing x-tenant-id/);

    const malformed = await codeOf(mesh.entries.listEntries({}, as("Not_A_Tenant")));
    expect(malformed.code).toBe(Code.InvalidArgument);
    expect(malformed.message).toMatch(/malformed x-tenant-id/);

    const unknown = await codeOf(mesh.entries.listEntries({}, as(mesh.uniqueTenantId("ghost"))));
    expect(unknown.code).toBe(Code.NotFound);
    expect(unknown.message).toMatch(/not found/);
  });

  it("never lets a tenant id like SQL reach the database or Platform", async () => {
    const before = { ...mesh.backend.tenancy.budget.stats(), cached: mesh.backend.tenancy.directory.size };
    const hostile = await codeOf(mesh.entries.listEntries({}, as("acme;drop database x")));
    expect(hostile.code).toBe(Code.InvalidArgument);
    const after = { ...mesh.backend.tenancy.budget.stats(), cached: mesh.backend.tenancy.directory.size };
    expect(after.opened).toBe(before.opened);
    expect(after.cached).toBe(before.cached);
    const created = await codeOf(mesh.platformClient.createTenant({ tenantId: "x'; drop table platform.tenants; --" }));
    expect(created.code).toBe(Code.InvalidArgument);
    const tables = await mesh.sql("postgres", "select datname from pg_database where datname like '%drop%'");
    expect(tables).toEqual([]);
  });

  it("answers an unknown or malformed entry id, a stale etag and oversized fields with clear errors", async () => {
    const t = await mesh.createTenant();
    const unknown = await codeOf(mesh.entries.getEntry({ id: "00000000-0000-4000-8000-000000000000" }, as(t.tenantId)));
    expect(unknown).toMatchObject({ code: Code.NotFound, message: expect.stringMatching(/not found/) });
    expect((await codeOf(mesh.entries.getEntry({ id: "42" }, as(t.tenantId)))).code).toBe(Code.InvalidArgument);

    // Each call starts when it is checked: a rejection waiting in a list would go unhandled.
    const cases: [string, () => Promise<unknown>][] = [
      ["empty title", () => mesh.entries.createEntry({ title: "  " }, as(t.tenantId))],
      ["long title", () => mesh.entries.createEntry({ title: "x".repeat(201) }, as(t.tenantId))],
      ["long body", () => mesh.entries.createEntry({ title: "ok", body: "x".repeat(65_537) }, as(t.tenantId))],
      ["NUL", () => mesh.entries.createEntry({ title: "a\u0000b" }, as(t.tenantId))],
      ["bad tag", () => mesh.entries.createEntry({ title: "ok", tags: ["Has Space"] }, as(t.tenantId))],
      ["too many tags", () => mesh.entries.createEntry({ title: "ok", tags: Array.from({ length: 21 }, (_, i) => `t${i}`) }, as(t.tenantId))],
      ["bad page token", () => mesh.entries.listEntries({ pageToken: "garbage" }, as(t.tenantId))],
      ["negative page size", () => mesh.entries.listEntries({ pageSize: -1 }, as(t.tenantId))],
    ];
    for (const [name, call] of cases) {
      const result = await codeOf(call());
      expect(result.code, name).toBe(Code.InvalidArgument);
      expect(result.message, name).not.toMatch(/insert|select|sql/i);
    }
    const { entry } = await mesh.entries.createEntry({ title: "x".repeat(200), body: "y".repeat(65_536) }, as(t.tenantId));
    const noMask = await codeOf(mesh.entries.updateEntry({ id: entry!.id, title: "z" }, as(t.tenantId)));
    expect(noMask.code).toBe(Code.InvalidArgument);
    const badPath = await codeOf(mesh.entries.updateEntry({ id: entry!.id, updateMask: { paths: ["id"] } }, as(t.tenantId)));
    expect(badPath.code).toBe(Code.InvalidArgument);
    const rows = await mesh.sql<{ n: string }>(t.database, "select count(*) as n from backend.entries");
    expect(rows[0]!.n).toBe("1");
  });
});
