import { Code, ConnectError } from "@connectrpc/connect";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { holdLock } from "../../testing/held-lock.ts";
import { startSingleBackend, type SingleBackend } from "../../testing/single-service.ts";

const headers = (tenantId: string) => ({ headers: { "x-tenant-id": tenantId } });

/** Settles to the call's outcome: "ok", or its error's code and message. */
const outcome = (call: Promise<unknown>) =>
  call.then(
    () => "ok",
    (error: unknown) => {
      const { code, rawMessage } = ConnectError.from(error);
      return `${Code[code]}: ${rawMessage}`;
    },
  );

describe("write freezes in a service", () => {
  let backend: SingleBackend;
  /** Backend again, holding writes for a moment only. */
  let impatient: SingleBackend;

  beforeAll(async () => {
    [backend, impatient] = await Promise.all([
      startSingleBackend({ env: { TENANTRY_FREEZE_MAX_MS: "600000" } }),
      startSingleBackend({ env: { TENANTRY_FREEZE_MAX_MS: "200" } }),
    ]);
  });
  afterAll(async () => {
    await Promise.all([backend?.stop(), impatient?.stop()]);
  });

  const titles = async (single: SingleBackend, database: string) =>
    (await single.sql<{ title: string }>(database, "select title from backend.entries order by title")).map((r) => r.title);

  it("hold a frozen tenant's writes until the thaw, while its reads go on and other tenants are untouched", async () => {
    const { tenantId, database } = await backend.createTenant();
    const other = await backend.createTenant();
    const { entry } = await backend.entries.createEntry({ title: "before" }, headers(tenantId));
    const freezes = backend.service.tenancy.freezes;

    const freezeId = backend.directory.freeze(tenantId, 600_000);
    await backend.directory.acknowledged(freezeId);
    expect(freezes.isFrozen(tenantId)).toBe(true);
    const held = backend.entries.createEntry({ title: "during" }, headers(tenantId));
    await expect.poll(() => freezes.writesHeld(tenantId)).toBe(1);

    expect((await backend.entries.getEntry({ id: entry!.id }, headers(tenantId))).entry?.title).toBe("before");
    expect((await backend.entries.listEntries({}, headers(tenantId))).entries.map((e) => e.title)).toEqual(["before"]);
    await backend.entries.createEntry({ title: "another tenant" }, headers(other.tenantId));
    expect(await titles(backend, other.database)).toEqual(["another tenant"]);
    expect(await titles(backend, database)).toEqual(["before"]);
    expect(freezes.writesHeld(tenantId)).toBe(1);

    backend.directory.thaw(tenantId);
    expect((await held).entry?.title).toBe("during");
    expect(await titles(backend, database)).toEqual(["before", "during"]);
    expect(freezes.isFrozen(tenantId)).toBe(false);
    expect(backend.directory.acknowledgements(freezeId)).toHaveLength(1);
  });

  it("try a read its database turns away again once the tenant thaws, so that reads go on through a move's cutover", async () => {
    const { tenantId, database, user } = await backend.createTenant();
    const { entry } = await backend.entries.createEntry({ title: "kept" }, headers(tenantId));
    const role = pg.escapeIdentifier(user);
    // As a move's cutover does at the source: the role may no longer log in, and its sessions are ended.
    const turnAway = async () => {
      await backend.sql("postgres", `alter role ${role} nologin`);
      await backend.sql("postgres", "select pg_terminate_backend(pid) from pg_stat_activity where usename = $1", [user]);
    };
    try {
      // Not frozen: the read fails at once, as UNAVAILABLE.
      await turnAway();
      expect(await outcome(backend.entries.getEntry({ id: entry!.id }, headers(tenantId)))).toMatch(/^Unavailable: /);

      const freezeId = backend.directory.freeze(tenantId, 600_000);
      await backend.directory.acknowledged(freezeId);
      let settled = false;
      const read = outcome(backend.entries.getEntry({ id: entry!.id }, headers(tenantId))).finally(() => (settled = true));
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(settled).toBe(false);
      await backend.sql("postgres", `alter role ${role} login`);
      backend.directory.thaw(tenantId);
      expect(await read).toBe("ok");
    } finally {
      await backend.sql("postgres", `alter role ${role} login`);
    }
    expect(await titles(backend, database)).toEqual(["kept"]);
  });

  it("answer a write held past TENANTRY_FREEZE_MAX_MS with UNAVAILABLE, saying the tenant is moving", async () => {
    const { tenantId, database } = await impatient.createTenant();
    const freezeId = impatient.directory.freeze(tenantId, 600_000);
    await impatient.directory.acknowledged(freezeId);

    expect(await outcome(impatient.entries.createEntry({ title: "held too long" }, headers(tenantId)))).toBe(
      `Unavailable: tenant "${tenantId}" is moving: its writes are paused for a moment (this one was held 200 ms); retry shortly`,
    );
    expect(await titles(impatient, database)).toEqual([]);
    impatient.directory.thaw(tenantId);
    await impatient.entries.createEntry({ title: "after the thaw" }, headers(tenantId));
    expect(await titles(impatient, database)).toEqual(["after the thaw"]);
  });

  it("acknowledge a freeze only once the tenant's write under way has ended", async () => {
    const { tenantId, database } = await backend.createTenant();
    const freezes = backend.service.tenancy.freezes;
    // A write under way: its insert waits for this lock, inside its transaction.
    const lock = await holdLock(backend.databaseUrl(database), "lock table backend.entries in exclusive mode");
    const underWay = backend.entries.createEntry({ title: "under way" }, headers(tenantId));
    await lock.waitingFor([/insert into "entries"/]);
    expect(freezes.writesUnderWay(tenantId)).toBe(1);

    const freezeId = backend.directory.freeze(tenantId, 600_000);
    await expect.poll(() => freezes.isFrozen(tenantId)).toBe(true);
    const held = backend.entries.createEntry({ title: "held" }, headers(tenantId));
    await expect.poll(() => freezes.writesHeld(tenantId)).toBe(1);
    expect(backend.directory.acknowledgements(freezeId)).toEqual([]);

    await lock.release();
    expect((await underWay).entry?.title).toBe("under way");
    await backend.directory.acknowledged(freezeId);
    expect(await titles(backend, database)).toEqual(["under way"]);
    expect(freezes.writesHeld(tenantId)).toBe(1);

    backend.directory.thaw(tenantId);
    expect((await held).entry?.title).toBe("held");
  });

  it("end a freeze by itself when its lease runs out without a renewal", async () => {
    const { tenantId, database } = await backend.createTenant();
    const freezes = backend.service.tenancy.freezes;
    const freezeId = backend.directory.freeze(tenantId, 300);
    await backend.directory.acknowledged(freezeId);
    // Held for up to ten minutes: only the lease's end lets it through.
    const held = backend.entries.createEntry({ title: "after the lapse" }, headers(tenantId));
    expect((await held).entry?.title).toBe("after the lapse");
    expect(freezes.isFrozen(tenantId)).toBe(false);
    expect(await titles(backend, database)).toEqual(["after the lapse"]);
  });

  it("take the freezes in force from the change feed when it connects again", async () => {
    const { tenantId, database } = await backend.createTenant();
    const unfrozen = await backend.createTenant();
    const freezeId = backend.directory.freeze(tenantId, 600_000);
    await backend.directory.acknowledged(freezeId);
    // A service that starts (or whose feed comes back) while freezes are in force.
    await backend.restart();
    const freezes = backend.service.tenancy.freezes;
    await expect.poll(() => backend.directory.acknowledgements(freezeId)).toHaveLength(2);
    expect(freezes.isFrozen(tenantId)).toBe(true);
    expect(freezes.isFrozen(unfrozen.tenantId)).toBe(false);

    const held = backend.entries.createEntry({ title: "held" }, headers(tenantId));
    await expect.poll(() => freezes.writesHeld(tenantId)).toBe(1);
    backend.directory.thaw(tenantId);
    await held;
    expect(await titles(backend, database)).toEqual(["held"]);
  });
});
