import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PlatformService } from "../../../gen/tenantry/platform/v1/platform_service_pb.js";
import { WriteFreezeService } from "../../../gen/tenantry/platform/v1/write_freeze_service_pb.js";
import { operatorCredentialInterceptor, tenantIdHeader } from "../../mesh/index.ts";
import { holdLock } from "../../testing/held-lock.ts";
import { startTestMesh, type TestMesh } from "../../testing/test-mesh.ts";

const headers = (tenantId: string) => ({ headers: { [tenantIdHeader]: tenantId } });

/** The call's outcome: "ok", or its error's code and message. */
const outcome = (call: Promise<unknown>) =>
  call.then(
    () => "ok",
    (error: unknown) => {
      const { code, rawMessage } = ConnectError.from(error);
      return `${Code[code]}: ${rawMessage}`;
    },
  );

describe("write freezes through Platform", () => {
  let mesh: TestMesh;
  let freezes: Client<typeof WriteFreezeService>;
  let platform: Client<typeof PlatformService>;

  beforeAll(async () => {
    mesh = await startTestMesh({
      platformEnv: { TENANTRY_FREEZE_ACK_TIMEOUT_MS: "1500", TENANTRY_FREEZE_LEASE_MS: "3000" },
      tenantServiceEnv: { TENANTRY_FREEZE_MAX_MS: "600000" },
    });
    freezes = mesh.client("platform", WriteFreezeService, [operatorCredentialInterceptor(mesh.operatorToken)]);
    platform = mesh.platformClient;
  });
  afterAll(() => mesh?.stop());

  const titles = async (database: string) => (await mesh.sql<{ title: string }>(database, "select title from backend.entries order by title")).map((r) => r.title);

  it("freeze a tenant's writes on every service, answering once each has acknowledged; reads go on, and a held write completes after the thaw", async () => {
    const { tenantId, database } = await mesh.createTenant();
    const other = await mesh.createTenant();
    const { entry } = await mesh.entries.createEntry({ title: "before" }, headers(tenantId));

    const { freeze } = await freezes.freezeTenantWrites({ tenantId, ttl: durationFromMs(600_000) });
    expect(freeze?.acknowledgeTime).toBeDefined();
    expect(freeze?.actor).toBe("operator");
    expect(freeze?.acknowledgements.map((a) => a.service).sort()).toEqual(["auth", "backend"]);
    // Told on the change feed: every service holds the tenant's writes already.
    expect(mesh.backend.tenancy.freezes.isFrozen(tenantId)).toBe(true);
    expect(mesh.auth.tenancy.freezes.isFrozen(tenantId)).toBe(true);

    const held = mesh.entries.createEntry({ title: "during" }, headers(tenantId));
    await expect.poll(() => mesh.backend.tenancy.freezes.writesHeld(tenantId)).toBe(1);
    expect((await mesh.entries.getEntry({ id: entry!.id }, headers(tenantId))).entry?.title).toBe("before");
    await mesh.entries.createEntry({ title: "another tenant" }, headers(other.tenantId));
    expect(await titles(database)).toEqual(["before"]);
    expect((await freezes.listWriteFreezes({})).freezes.map((f) => f.freezeId)).toEqual([freeze!.freezeId]);

    const thawed = await freezes.thawTenantWrites({ tenantId });
    expect(thawed.freeze?.freezeId).toBe(freeze!.freezeId);
    expect((await held).entry?.title).toBe("during");
    expect(await titles(database)).toEqual(["before", "during"]);
    expect((await freezes.listWriteFreezes({})).freezes).toEqual([]);
    // Thawing again changes nothing.
    expect((await freezes.thawTenantWrites({ tenantId })).freeze).toBeUndefined();

    const { events } = await platform.listAuditEvents({ tenantId });
    expect(events.map((e) => e.action).slice(0, 3)).toEqual(["ThawTenantWrites", "ThawTenantWrites", "FreezeTenantWrites"]);
    expect(JSON.parse(events[2]!.detail)).toMatchObject({ freezeId: freeze!.freezeId, ttlMs: 600_000 });
  });

  it("answer only once a write transaction of the tenant under way has ended", async () => {
    const { tenantId, database } = await mesh.createTenant();
    const lock = await holdLock(mesh.databaseUrl(database), "lock table backend.entries in exclusive mode");
    const underWay = mesh.entries.createEntry({ title: "under way" }, headers(tenantId));
    await lock.waitingFor([/insert into "entries"/]);

    let answered = false;
    const freezing = freezes.freezeTenantWrites({ tenantId, ttl: durationFromMs(600_000) }).finally(() => (answered = true));
    // Auth has nothing under way and acknowledges; Backend waits for its write.
    await expect.poll(async () => (await freezes.listWriteFreezes({})).freezes.find((f) => f.tenantId === tenantId)?.acknowledgements.map((a) => a.service)).toEqual(["auth"]);
    expect(mesh.backend.tenancy.freezes.writesUnderWay(tenantId)).toBe(1);
    expect(answered).toBe(false);

    await lock.release();
    const { freeze } = await freezing;
    expect(freeze?.acknowledgements.map((a) => a.service).sort()).toEqual(["auth", "backend"]);
    expect((await underWay).entry?.title).toBe("under way");
    expect(await titles(database)).toEqual(["under way"]);
    await freezes.thawTenantWrites({ tenantId, freezeId: freeze!.freezeId });
  });

  it("lift a freeze that a service did not acknowledge in time, and fail with UNAVAILABLE naming it", async () => {
    const { tenantId, database } = await mesh.createTenant();
    const lock = await holdLock(mesh.databaseUrl(database), "lock table backend.entries in exclusive mode");
    const underWay = mesh.entries.createEntry({ title: "stuck" }, headers(tenantId));
    await lock.waitingFor([/insert into "entries"/]);

    const failure = await outcome(freezes.freezeTenantWrites({ tenantId }));
    expect(failure).toMatch(
      new RegExp(`^Unavailable: the write freeze of tenant "${tenantId}" was not acknowledged within 1500 ms by backend instance [0-9a-f-]{36} .*; the freeze is lifted: retry$`),
    );
    expect((await freezes.listWriteFreezes({})).freezes.filter((f) => f.tenantId === tenantId)).toEqual([]);
    await expect.poll(() => mesh.backend.tenancy.freezes.isFrozen(tenantId)).toBe(false);
    await lock.release();
    await underWay;
    const { events } = await platform.listAuditEvents({ tenantId, pageSize: 1 });
    expect(events[0]).toMatchObject({ action: "FreezeTenantWrites", outcome: 2 });
  });

  it("refuse a second freeze of a frozen tenant, an unknown or inactive tenant, and a ttl out of range", async () => {
    const { tenantId } = await mesh.createTenant();
    const { freeze } = await freezes.freezeTenantWrites({ tenantId });
    expect(await outcome(freezes.freezeTenantWrites({ tenantId }))).toMatch(
      new RegExp(`^FailedPrecondition: tenant "${tenantId}"'s writes are frozen already \\(freeze ${freeze!.freezeId}, by operator, until .*\\): thaw them first$`),
    );
    expect(await outcome(freezes.thawTenantWrites({ tenantId, freezeId: "00000000-0000-4000-8000-000000000000" }))).toBe(
      `FailedPrecondition: tenant "${tenantId}" is held by freeze ${freeze!.freezeId}, not 00000000-0000-4000-8000-000000000000`,
    );
    await freezes.thawTenantWrites({ tenantId, freezeId: freeze!.freezeId });

    expect(await outcome(freezes.freezeTenantWrites({ tenantId: "no-such-tenant" }))).toBe('NotFound: tenant "no-such-tenant" not found');
    expect(await outcome(freezes.freezeTenantWrites({ tenantId: "Bad Id" }))).toMatch(/^InvalidArgument: /);
    expect(await outcome(freezes.freezeTenantWrites({ tenantId, ttl: durationFromMs(3_600_001) }))).toBe("InvalidArgument: ttl must be between 0 (a minute) and an hour, not 3600001 ms");
    await platform.suspendTenant({ tenantId, reason: "a freeze of a suspended tenant is allowed" });
    await freezes.thawTenantWrites({ tenantId, freezeId: (await freezes.freezeTenantWrites({ tenantId })).freeze!.freezeId });
    await platform.deleteTenant({ tenantId });
    expect(await outcome(freezes.freezeTenantWrites({ tenantId }))).toMatch(new RegExp(`^FailedPrecondition: tenant "${tenantId}" is (offboarding|deleted): only an active or suspended tenant's writes can be frozen$`));
  });

  it("renew a freeze's lease for as long as it lasts, and end it at its time to live", async () => {
    const { tenantId, database } = await mesh.createTenant();
    // Leases of 3 s, renewed every second, for a freeze of 8 s.
    const { freeze } = await freezes.freezeTenantWrites({ tenantId, ttl: durationFromMs(8000) });
    const held = mesh.entries.createEntry({ title: "after the freeze" }, headers(tenantId));
    const firstLeaseEnds = freeze!.createTime!.seconds * 1000n + BigInt(Math.floor(freeze!.createTime!.nanos / 1e6)) + 3000n;
    await sleep(Math.max(0, Number(firstLeaseEnds) - Date.now()) + 200);
    // Past the first lease: renewed, the freeze holds on every service.
    expect(mesh.backend.tenancy.freezes.isFrozen(tenantId)).toBe(true);
    expect(mesh.backend.tenancy.freezes.writesHeld(tenantId)).toBe(1);
    expect(await titles(database)).toEqual([]);
    // Held for up to ten minutes: only the freeze's end lets it through.
    await held;
    expect(await titles(database)).toEqual(["after the freeze"]);
    expect((await freezes.listWriteFreezes({})).freezes.map((f) => f.freezeId)).not.toContain(freeze!.freezeId);
  });
});
