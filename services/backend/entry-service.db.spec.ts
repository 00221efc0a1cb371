import { Code, ConnectError } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { TenantRoute } from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import { holdLock } from "../testing/held-lock.ts";
import { placements } from "../testing/placements.ts";
import { startSingleBackend, type NewTenantOptions, type SingleBackend } from "../testing/single-service.ts";
import { schemaOf } from "../testing/sql-as.ts";

let backend: SingleBackend;
beforeAll(async () => {
  backend = await startSingleBackend();
});
afterAll(() => backend?.stop());

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

// Each test runs against tenants of both placements, on the one Backend.
describe.each(placements)("entry service ($name tenants)", ({ placement }) => {
  const createTenant = (options: NewTenantOptions = {}) => backend.createTenant({ ...options, placement });

  it("keeps each tenant's entries in that tenant's own schema", async () => {
    const a = await createTenant();
    const b = await createTenant();
    const { entry: ea } = await backend.entries.createEntry({ title: "only in a", tags: ["x"] }, as(a.tenantId));
    const { entry: eb } = await backend.entries.createEntry({ title: "only in b" }, as(b.tenantId));

    const listA = await backend.entries.listEntries({}, as(a.tenantId));
    const listB = await backend.entries.listEntries({}, as(b.tenantId));
    expect(listA.entries.map((e) => e.title)).toEqual(["only in a"]);
    expect(listB.entries.map((e) => e.title)).toEqual(["only in b"]);
    expect((await codeOf(backend.entries.getEntry({ id: ea!.id }, as(b.tenantId)))).code).toBe(Code.NotFound);

    const rowsA = await backend.sqlAs<{ id: string; title: string }>(a, "select id, title from entries");
    const rowsB = await backend.sqlAs<{ id: string; title: string }>(b, "select id, title from entries");
    expect(rowsA).toEqual([{ id: ea!.id, title: "only in a" }]);
    expect(rowsB).toEqual([{ id: eb!.id, title: "only in b" }]);
  });

  it("creates, reads, updates with an etag, lists by tag and deletes", async () => {
    const t = await createTenant();
    const { entry } = await backend.entries.createEntry({ title: "first", body: "text", tags: ["a", "b", "a"] }, as(t.tenantId));
    expect(entry).toMatchObject({ title: "first", body: "text", tags: ["a", "b"], etag: "1" });
    expect((await backend.entries.getEntry({ id: entry!.id }, as(t.tenantId))).entry?.title).toBe("first");

    const { entry: updated } = await backend.entries.updateEntry(
      { id: entry!.id, title: "renamed", updateMask: { paths: ["title"] }, etag: entry!.etag },
      as(t.tenantId),
    );
    expect(updated).toMatchObject({ title: "renamed", body: "text", etag: "2" });

    const stale = await codeOf(
      backend.entries.updateEntry({ id: entry!.id, body: "lost", updateMask: { paths: ["body"] }, etag: entry!.etag }, as(t.tenantId)),
    );
    expect(stale.code).toBe(Code.Aborted);
    expect((await backend.entries.getEntry({ id: entry!.id }, as(t.tenantId))).entry?.body).toBe("text");

    await backend.entries.createEntry({ title: "second", tags: ["b"] }, as(t.tenantId));
    await backend.entries.createEntry({ title: "third" }, as(t.tenantId));
    const tagged = await backend.entries.listEntries({ tag: "b" }, as(t.tenantId));
    expect(tagged.entries.map((e) => e.title)).toEqual(["second", "renamed"]);

    await backend.entries.deleteEntry({ id: entry!.id }, as(t.tenantId));
    expect((await codeOf(backend.entries.getEntry({ id: entry!.id }, as(t.tenantId)))).code).toBe(Code.NotFound);
    expect((await codeOf(backend.entries.deleteEntry({ id: entry!.id }, as(t.tenantId)))).code).toBe(Code.NotFound);
  });

  it("reads an entry exactly as it was written and as it is listed: fields, etag and timestamps", async () => {
    const t = await createTenant();
    const { entry: created } = await backend.entries.createEntry({ title: "read back", body: "some text", tags: ["x", "y"] }, as(t.tenantId));
    expect((await backend.entries.getEntry({ id: created!.id }, as(t.tenantId))).entry).toEqual(created);
    const { entry: updated } = await backend.entries.updateEntry(
      { id: created!.id, tags: [], updateMask: { paths: ["tags"] }, etag: created!.etag },
      as(t.tenantId),
    );
    expect(updated).toMatchObject({ tags: [], etag: "2" });
    const read = (await backend.entries.getEntry({ id: created!.id }, as(t.tenantId))).entry;
    expect(read).toEqual(updated);
    expect(read?.createTime).toEqual(created?.createTime);
    expect((await backend.entries.listEntries({}, as(t.tenantId))).entries).toEqual([read]);
  });

  it("pages through entries newest first without gaps or repeats", async () => {
    const t = await createTenant();
    const titles: string[] = [];
    for (let i = 0; i < 23; i++) {
      titles.push(`entry ${i}`);
      await backend.entries.createEntry({ title: `entry ${i}` }, as(t.tenantId));
    }
    const seen: string[] = [];
    let pageToken = "";
    do {
      const page = await backend.entries.listEntries({ pageSize: 5, pageToken }, as(t.tenantId));
      expect(page.entries.length).toBeLessThanOrEqual(5);
      seen.push(...page.entries.map((e) => e.title));
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    expect(seen).toEqual(titles.reverse());
  });
});

describe.each(placements)("retried creates ($name tenants)", ({ placement }) => {
  const createTenant = (options: NewTenantOptions = {}) => backend.createTenant({ ...options, placement });
  const count = async (tenant: TenantRoute, table: string) => Number((await backend.sqlAs<{ n: string }>(tenant, `select count(*) as n from ${table}`))[0]!.n);

  it("answers a repeat of a request_id with the first response, as it was then, and stores nothing more", async () => {
    const t = await createTenant();
    const requestId = randomUUID();
    const first = await backend.entries.createEntry({ title: "once", tags: ["a"], requestId }, as(t.tenantId));
    await backend.entries.updateEntry({ id: first.entry!.id, title: "changed since", updateMask: { paths: ["title"] } }, as(t.tenantId));

    const again = await backend.entries.createEntry({ title: "once", tags: ["a"], requestId: requestId.toUpperCase() }, as(t.tenantId));
    expect(again).toEqual(first);
    expect(again.entry).toMatchObject({ title: "once", etag: "1" });
    expect(await count(t, "entries")).toBe(1);
    expect(await count(t, "request_ids")).toBe(1);
  });

  it("answers a repeat the same after Backend restarts, as any of its instances would", async () => {
    const t = await createTenant();
    const request = { title: "before the restart", requestId: randomUUID() };
    const first = await backend.entries.createEntry(request, as(t.tenantId));
    await backend.restart();
    expect(await backend.entries.createEntry(request, as(t.tenantId))).toEqual(first);
    expect(await count(t, "entries")).toBe(1);
  });

  it("makes a repeat sent while the first call runs wait for it and answer the same", async () => {
    const t = await createTenant();
    // Warm up: the tenant's route, token and storage measurement are ready before the lock.
    await backend.entries.createEntry({ title: "warm-up" }, as(t.tenantId));
    const lock = await holdLock(backend.databaseUrl(t.database), `lock table ${schemaOf(t, "backend")}.entries in share mode`);
    const request = { title: "at the same time", requestId: randomUUID() };
    const calls = [backend.entries.createEntry(request, as(t.tenantId)), backend.entries.createEntry(request, as(t.tenantId))];
    // One call has recorded the id and waits to store its entry; the other waits on the id.
    await lock.waitingFor([/"entries"/, /request_ids/]);
    await lock.release();
    const [a, b] = await Promise.all(calls);
    expect(a).toEqual(b);
    expect(await count(t, "entries")).toBe(2);
    expect(await count(t, "request_ids")).toBe(1);
  });

  it("refuses a request_id used before for a different request with ALREADY_EXISTS, storing nothing", async () => {
    const t = await createTenant();
    const requestId = randomUUID();
    await backend.entries.createEntry({ title: "first", requestId }, as(t.tenantId));
    for (const other of [{ title: "second" }, { title: "first", tags: ["x"] }, { title: "first", body: "more" }]) {
      const refused = await codeOf(backend.entries.createEntry({ ...other, requestId }, as(t.tenantId)));
      expect(refused.code, JSON.stringify(other)).toBe(Code.AlreadyExists);
      expect(refused.message).toMatch(/request_id .* different request/);
    }
    expect(await count(t, "entries")).toBe(1);
    expect(await count(t, "request_ids")).toBe(1);
  });

  it("refuses a request_id that is not a UUID with INVALID_ARGUMENT", async () => {
    const t = await createTenant();
    for (const requestId of ["42", "not-a-uuid", `${randomUUID()}0`, " ".repeat(36)]) {
      const refused = await codeOf(backend.entries.createEntry({ title: "x", requestId }, as(t.tenantId)));
      expect(refused.code, requestId).toBe(Code.InvalidArgument);
      expect(refused.message).toMatch(/malformed request_id/);
    }
    expect(await count(t, "entries")).toBe(0);
    expect(await count(t, "request_ids")).toBe(0);
  });

  it("keeps no request_id of a failed create, so a corrected request may use it", async () => {
    const t = await createTenant();
    const requestId = randomUUID();
    expect((await codeOf(backend.entries.createEntry({ title: " ", requestId }, as(t.tenantId)))).code).toBe(Code.InvalidArgument);
    expect(await count(t, "request_ids")).toBe(0);
    const corrected = await backend.entries.createEntry({ title: "fixed", requestId }, as(t.tenantId));
    expect(await backend.entries.createEntry({ title: "fixed", requestId }, as(t.tenantId))).toEqual(corrected);
    expect(await count(t, "entries")).toBe(1);
  });

  it("keeps each tenant's request_ids apart", async () => {
    const a = await createTenant();
    const b = await createTenant();
    const requestId = randomUUID();
    const inA = await backend.entries.createEntry({ title: "in a", requestId }, as(a.tenantId));
    const inB = await backend.entries.createEntry({ title: "in b", requestId }, as(b.tenantId));
    expect(inB.entry?.id).not.toBe(inA.entry?.id);
    expect(inB.entry?.title).toBe("in b");
    expect(await count(a, "entries")).toBe(1);
    expect(await count(b, "entries")).toBe(1);
  });

  it("creates on every call without a request_id, as before", async () => {
    const t = await createTenant();
    const first = await backend.entries.createEntry({ title: "same" }, as(t.tenantId));
    const second = await backend.entries.createEntry({ title: "same" }, as(t.tenantId));
    expect(second.entry?.id).not.toBe(first.entry?.id);
    expect(await count(t, "entries")).toBe(2);
    expect(await count(t, "request_ids")).toBe(0);
  });

  it("forgets request_ids older than a day on later creates, and keeps younger ones", async () => {
    const t = await createTenant();
    const [expired, young] = [randomUUID(), randomUUID()];
    const first = await backend.entries.createEntry({ title: "long ago", requestId: expired }, as(t.tenantId));
    await backend.entries.createEntry({ title: "yesterday", requestId: young }, as(t.tenantId));
    await backend.sqlAs(t, "update request_ids set created_at = now() - interval '25 hours' where request_id = $1", [expired]);
    await backend.sqlAs(t, "update request_ids set created_at = now() - interval '23 hours' where request_id = $1", [young]);

    const today = randomUUID();
    await backend.entries.createEntry({ title: "today", requestId: today }, as(t.tenantId));
    const left = await backend.sqlAs<{ request_id: string }>(t, "select request_id from request_ids");
    expect(left.map((r) => r.request_id).sort()).toEqual([young, today].sort());
    // A forgotten id is a new request again.
    const reused = await backend.entries.createEntry({ title: "long ago", requestId: expired }, as(t.tenantId));
    expect(reused.entry?.id).not.toBe(first.entry?.id);
  });
});

describe("bad input of no tenant (the same for either placement)", () => {
  it("refuses a missing, malformed or unknown tenant id with its own code", async () => {
    const missing = await codeOf(backend.entries.listEntries({}));
    expect(missing.code).toBe(Code.InvalidArgument);
    expect(missing.message).toMatch(/missing x-tenant-id/);

    const malformed = await codeOf(backend.entries.listEntries({}, as("Not_A_Tenant")));
    expect(malformed.code).toBe(Code.InvalidArgument);
    expect(malformed.message).toMatch(/malformed x-tenant-id/);

    const unknown = await codeOf(backend.entries.listEntries({}, as(backend.uniqueTenantId("ghost"))));
    expect(unknown.code).toBe(Code.NotFound);
    expect(unknown.message).toMatch(/not found/);
  });

  it("never lets a tenant id like SQL reach the database or the tenant directory", async () => {
    const before = { ...backend.service.tenancy.budget.stats(), cached: backend.service.tenancy.directory.size };
    const hostile = await codeOf(backend.entries.listEntries({}, as("acme;drop database x")));
    expect(hostile.code).toBe(Code.InvalidArgument);
    const after = { ...backend.service.tenancy.budget.stats(), cached: backend.service.tenancy.directory.size };
    expect(after.opened).toBe(before.opened);
    expect(after.cached).toBe(before.cached);
    const tables = await backend.sql("postgres", "select datname from pg_database where datname like '%drop%'");
    expect(tables).toEqual([]);
  });
});

describe.each(placements)("bad input ($name tenants)", ({ placement }) => {
  const createTenant = (options: NewTenantOptions = {}) => backend.createTenant({ ...options, placement });

  it("answers an unknown or malformed entry id, a stale etag and oversized fields with clear errors", async () => {
    const t = await createTenant();
    const unknown = await codeOf(backend.entries.getEntry({ id: "00000000-0000-4000-8000-000000000000" }, as(t.tenantId)));
    expect(unknown).toMatchObject({ code: Code.NotFound, message: expect.stringMatching(/not found/) });
    expect((await codeOf(backend.entries.getEntry({ id: "42" }, as(t.tenantId)))).code).toBe(Code.InvalidArgument);

    // Each call starts when it is checked: a rejection waiting in a list would go unhandled.
    const cases: [string, () => Promise<unknown>][] = [
      ["empty title", () => backend.entries.createEntry({ title: "  " }, as(t.tenantId))],
      ["long title", () => backend.entries.createEntry({ title: "x".repeat(201) }, as(t.tenantId))],
      ["long body", () => backend.entries.createEntry({ title: "ok", body: "x".repeat(65_537) }, as(t.tenantId))],
      ["NUL", () => backend.entries.createEntry({ title: "a\u0000b" }, as(t.tenantId))],
      ["bad tag", () => backend.entries.createEntry({ title: "ok", tags: ["Has Space"] }, as(t.tenantId))],
      ["too many tags", () => backend.entries.createEntry({ title: "ok", tags: Array.from({ length: 21 }, (_, i) => `t${i}`) }, as(t.tenantId))],
      ["bad page token", () => backend.entries.listEntries({ pageToken: "garbage" }, as(t.tenantId))],
      ["negative page size", () => backend.entries.listEntries({ pageSize: -1 }, as(t.tenantId))],
    ];
    for (const [name, call] of cases) {
      const result = await codeOf(call());
      expect(result.code, name).toBe(Code.InvalidArgument);
      expect(result.message, name).not.toMatch(/insert|select|sql/i);
    }
    const { entry } = await backend.entries.createEntry({ title: "x".repeat(200), body: "y".repeat(65_536) }, as(t.tenantId));
    const noMask = await codeOf(backend.entries.updateEntry({ id: entry!.id, title: "z" }, as(t.tenantId)));
    expect(noMask.code).toBe(Code.InvalidArgument);
    const badPath = await codeOf(backend.entries.updateEntry({ id: entry!.id, updateMask: { paths: ["id"] } }, as(t.tenantId)));
    expect(badPath.code).toBe(Code.InvalidArgument);
    const rows = await backend.sqlAs<{ n: string }>(t, "select count(*) as n from entries");
    expect(rows[0]!.n).toBe("1");
  });
});
