import { Code, type Client } from "@connectrpc/connect";
import { failure } from "../testing/failure.ts";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BackupService, BackupState, RestoreState, VerifyResult } from "../../gen/tenantry/platform/v1/backup_service_pb.js";
import { ClusterService } from "../../gen/tenantry/platform/v1/cluster_service_pb.js";
import { FleetService, MigrationOutcome } from "../../gen/tenantry/platform/v1/fleet_service_pb.js";
import { MoveMode, MoveState } from "../../gen/tenantry/platform/v1/move_pb.js";
import { MoveService } from "../../gen/tenantry/platform/v1/move_service_pb.js";
import { Placement, TenantStatus } from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import { operatorCredentialInterceptor } from "../mesh/index.ts";
import { newerBackendMigrations, upcomingBackendVersion } from "../testing/newer-backend.ts";
import { entryTitles } from "../testing/entry-titles.ts";
import { retried } from "../testing/retried.ts";
import { startSecondServer, type SecondServer } from "../testing/second-server.ts";
import { startTestMesh, type TestMesh } from "../testing/test-mesh.ts";
import { finalBackupLabel } from "./lifecycle/offboarding-steps.ts";

/*
 * Journeys across placements, backups and moves, as an operator would take
 * a tenant through them: each step is followed by a Login and an entry
 * written, and every entry acknowledged so far (and not undone by a
 * restore) must be there.
 */

const owner = { email: "owner@example.com", password: "correct horse battery" };
const headers = (tenantId: string) => ({ headers: { "x-tenant-id": tenantId } });
const underscored = (tenantId: string) => tenantId.replaceAll("-", "_");
const roleOf = (tenantId: string) => `tenant_${underscored(tenantId)}`;
const basePrefix = (tenantId: string) => `t_${underscored(tenantId)}_`;

let mesh: TestMesh;
let second: SecondServer;
let moves: Client<typeof MoveService>;
let backups: Client<typeof BackupService>;
let fleet: Client<typeof FleetService>;

beforeAll(async () => {
  [mesh, second] = await Promise.all([
    startTestMesh({
      services: ["auth", "backend"],
      // Offboarded tenants are purged at once.
      platformEnv: { TENANTRY_OFFBOARDING_GRACE_MS: "0" },
    }),
    startSecondServer(),
  ]);
  const operator = [operatorCredentialInterceptor(mesh.operatorToken)];
  moves = mesh.client("platform", MoveService, operator);
  backups = mesh.client("platform", BackupService, operator);
  fleet = mesh.client("platform", FleetService, operator);
  await mesh.client("platform", ClusterService, operator).registerCluster(second.registration("second"));
});
afterAll(async () => {
  await mesh?.stop();
  await second?.stop();
});

/** Runs SQL as the superuser in a database of the cluster named. */
function sqlOn<R extends Record<string, unknown>>(cluster: string, database: string, text: string, values?: unknown[]): Promise<R[]> {
  return cluster === "default" ? mesh.sql<R>(database, text, values) : second.sql<R>(database, text, values);
}

/** Where a tenant's data is now, by the route services resolve. */
async function whereIs(tenantId: string): Promise<{ cluster: string; database: string; prefix: string; placement: Placement }> {
  const { route } = await mesh.platformMeshClient.resolveTenant({ tenantId });
  const { tenant } = await mesh.platformClient.getTenant({ tenantId });
  return { cluster: tenant!.cluster, database: route!.database, prefix: route!.schemaPrefix, placement: route!.placement };
}

/** The tenant's entry titles as Backend serves them, every page. */
const titles = (tenantId: string) => entryTitles(mesh.entries, tenantId);

/** Polls until the tenant's entries are `expected` (a switch reaching the services through the feed). */
async function untilTitles(tenantId: string, expected: string[], limitMs = 15_000): Promise<void> {
  const want = [...expected].sort();
  const deadline = Date.now() + limitMs;
  for (;;) {
    const found = await titles(tenantId).catch(() => undefined);
    if (found !== undefined && found.join("\n") === want.join("\n")) {
      return;
    }
    if (Date.now() > deadline) {
      expect(found).toEqual(want);
      return;
    }
    await sleep(50);
  }
}

/**
 * A tenant the journey follows: the entries acknowledged to it (and not
 * undone), checked after each step with a Login and a new entry.
 */
class Journey {
  readonly tenantId: string;
  readonly acknowledged: string[] = [];
  /** Entries written by {@link writingDuring}. */
  writtenDuringMoves = 0;
  #written = 0;

  constructor(tenantId: string) {
    this.tenantId = tenantId;
  }

  /** Writes an entry (retried with its request id until answered) and remembers it. */
  async write(): Promise<string> {
    const title = `entry ${++this.#written}`;
    const requestId = crypto.randomUUID();
    await retried(() => mesh.entries.createEntry({ title, requestId }, headers(this.tenantId)));
    this.acknowledged.push(title);
    return title;
  }

  /** The owner logs in, every acknowledged entry is there, and a new one is written. */
  async serves(): Promise<void> {
    expect(await retried(() => mesh.login(this.tenantId, owner))).toMatch(/^ey/);
    await untilTitles(this.tenantId, this.acknowledged);
    await this.write();
    await untilTitles(this.tenantId, this.acknowledged);
  }

  /** Runs `work` (a move) while entries are written one after another (see {@link write}); a write that fails otherwise than UNAVAILABLE fails it. */
  async writingDuring<T>(work: () => Promise<T>): Promise<T> {
    let stopping = false;
    const writer = (async () => {
      while (!stopping) {
        await this.write();
        this.writtenDuringMoves++;
        // A client's pace, not a load test's.
        await sleep(20);
      }
    })();
    try {
      return await work();
    } finally {
      stopping = true;
      await writer;
    }
  }

  /** Forgets the entries written since the `count` first (an in-place restore took the tenant back there). */
  rewind(count: number): string[] {
    return this.acknowledged.splice(count);
  }
}

/** A tenant of a placement with its owner and two entries. */
async function journeyOf(prefix: string, placement: Placement): Promise<Journey> {
  const tenant = await mesh.createTenant({ tenantId: mesh.uniqueTenantId(prefix), owner, placement });
  const journey = new Journey(tenant.tenantId);
  await journey.write();
  await journey.write();
  return journey;
}

/** A move that must succeed, as MoveTenant answers it. */
async function moved(request: Parameters<typeof moves.moveTenant>[0]) {
  const { move } = await moves.moveTenant(request, { timeoutMs: 120_000 });
  expect(move).toMatchObject({ state: MoveState.SUCCEEDED });
  return move!;
}

/** A backup that must succeed. */
async function backedUp(tenantId: string, label = "") {
  const { backup } = await backups.createBackup({ tenantId, label });
  expect(backup).toMatchObject({ state: BackupState.SUCCEEDED, failureReason: "" });
  return backup!;
}

/** The schemas a tenant's role owns in a database of a cluster, by name. */
async function ownedSchemas(cluster: string, database: string, tenantId: string): Promise<string[]> {
  const rows = await sqlOn<{ nspname: string }>(cluster, database, "select nspname from pg_namespace where nspowner = (select oid from pg_roles where rolname = $1) order by 1", [roleOf(tenantId)]);
  return rows.map((r) => r.nspname);
}

describe("a pooled tenant promoted to a database of its own, its schema prefix kept", () => {
  it("is backed up and verified, cloned into either placement, restored in place and back, moved online and under freeze, and goes back into a pool", async () => {
    const journey = await journeyOf("promoted", Placement.POOLED);
    const { tenantId } = journey;
    const prefix = basePrefix(tenantId);
    await journey.writingDuring(() => moved({ tenantId, targetCluster: "default", targetPlacement: Placement.DEDICATED }));
    expect(await whereIs(tenantId)).toEqual({ cluster: "default", database: roleOf(tenantId), prefix, placement: Placement.DEDICATED });
    await journey.serves();

    const backup = await backedUp(tenantId, "promoted");
    expect(backup.tables.every((t) => t.name.startsWith("auth.") || t.name.startsWith("backend."))).toBe(true);
    expect(backup.tables.find((t) => t.name === "backend.entries")?.rows).toBe(BigInt(journey.acknowledged.length));
    const atBackup = journey.acknowledged.length;
    const { backup: verified } = await backups.verifyBackup({ backupId: backup.backupId });
    expect(verified).toMatchObject({ verifyResult: VerifyResult.PASSED, verifyError: "" });

    for (const placement of [Placement.POOLED, Placement.DEDICATED]) {
      const cloneId = mesh.uniqueTenantId(placement === Placement.POOLED ? "promoted-pclone" : "promoted-dclone");
      const { tenant: clone } = await backups.restoreBackup({ backupId: backup.backupId, targetTenantId: cloneId, placement });
      expect(clone).toMatchObject({ status: TenantStatus.ACTIVE, placement });
      expect((await whereIs(cloneId)).prefix).toBe(placement === Placement.POOLED ? basePrefix(cloneId) : "");
      const cloned = new Journey(cloneId);
      cloned.acknowledged.push(...journey.acknowledged);
      await cloned.serves();
    }

    // In place: back to the backup (its database's schemas named by service), then undone (back to the prefixed ones).
    await journey.serves();
    const { restore } = await backups.restoreBackup({ backupId: backup.backupId });
    expect(restore).toMatchObject({ state: RestoreState.SUCCEEDED });
    expect(await whereIs(tenantId)).toMatchObject({ placement: Placement.DEDICATED, prefix: "" });
    const undone = journey.rewind(atBackup);
    await journey.serves();
    const sinceRestore = journey.rewind(atBackup);
    await backups.undoRestore({ tenantId });
    journey.acknowledged.push(...undone);
    expect(await whereIs(tenantId)).toMatchObject({ database: roleOf(tenantId), prefix });
    expect(sinceRestore).toHaveLength(1);
    await journey.serves();

    // To another cluster online, back under freeze, each keeping the prefix.
    const online = await journey.writingDuring(() => moved({ tenantId, targetCluster: "second", mode: MoveMode.ONLINE, compareDigests: true }));
    expect(online.mode).toBe(MoveMode.ONLINE);
    expect(await whereIs(tenantId)).toMatchObject({ cluster: "second", placement: Placement.DEDICATED, prefix });
    await journey.serves();
    const frozen = await journey.writingDuring(() => moved({ tenantId, targetCluster: "default", mode: MoveMode.COPY_UNDER_FREEZE, compareDigests: true }));
    expect(frozen.mode).toBe(MoveMode.COPY_UNDER_FREEZE);
    expect(await whereIs(tenantId)).toMatchObject({ cluster: "default", placement: Placement.DEDICATED, prefix });
    await journey.serves();
    expect(await ownedSchemas("default", frozen.targetDatabase, tenantId)).toEqual([`${prefix}auth`, `${prefix}backend`]);

    // Back into a pool database.
    const pooled = await journey.writingDuring(() => moved({ tenantId, targetCluster: "default", targetPlacement: Placement.POOLED }));
    expect(await whereIs(tenantId)).toMatchObject({ cluster: "default", placement: Placement.POOLED, database: pooled.targetDatabase, prefix });
    await journey.serves();
    await backedUp(tenantId, "pooled again");
    console.log(`promoted tenant's journey: ${journey.acknowledged.length} entries acknowledged and present at the end, ${journey.writtenDuringMoves} of them written during its four moves`);
  });
});

describe("a dedicated tenant moved into a pool database", () => {
  it("is backed up and restored in place there, and offboarded with a final backup that restores as a clone", async () => {
    const journey = await journeyOf("demoted", Placement.DEDICATED);
    const { tenantId } = journey;
    const pooled = await moved({ tenantId, targetCluster: "default", targetPlacement: Placement.POOLED });
    expect(await whereIs(tenantId)).toMatchObject({ placement: Placement.POOLED, database: pooled.targetDatabase, prefix: basePrefix(tenantId) });
    await journey.serves();

    const backup = await backedUp(tenantId);
    const atBackup = journey.acknowledged.length;
    await journey.write();
    await backups.restoreBackup({ backupId: backup.backupId });
    journey.rewind(atBackup);
    expect(await whereIs(tenantId)).toMatchObject({ placement: Placement.POOLED, prefix: `${basePrefix(tenantId)}r2__` });
    await journey.serves();

    const { tenant: deleted } = await mesh.platformClient.deleteTenant({ tenantId });
    expect(deleted?.status).toBe(TenantStatus.DELETED);
    expect(await ownedSchemas("default", pooled.targetDatabase, tenantId)).toEqual([]);
    const { backups: listed } = await backups.listBackups({ tenantId });
    const final = listed.find((b) => b.label === finalBackupLabel);
    expect(final?.state).toBe(BackupState.SUCCEEDED);
    const cloneId = mesh.uniqueTenantId("demoted-afterlife");
    await backups.restoreBackup({ backupId: final!.backupId, targetTenantId: cloneId });
    const clone = new Journey(cloneId);
    clone.acknowledged.push(...journey.acknowledged);
    await clone.serves();
  });
});

describe("a pooled tenant of a later generation", () => {
  it("is promoted with that generation's prefix (the generation it replaced dropped with the rest of its schemas there), backed up, verified and restored", async () => {
    const journey = await journeyOf("generation", Placement.POOLED);
    const { tenantId } = journey;
    const base = basePrefix(tenantId);
    const { database: pool } = await whereIs(tenantId);
    const first = await backedUp(tenantId);
    await backups.restoreBackup({ backupId: first.backupId });
    expect(await whereIs(tenantId)).toMatchObject({ placement: Placement.POOLED, prefix: `${base}r2__` });
    await journey.serves();

    await moved({ tenantId, targetCluster: "default", targetPlacement: Placement.DEDICATED });
    expect(await whereIs(tenantId)).toMatchObject({ placement: Placement.DEDICATED, database: roleOf(tenantId), prefix: `${base}r2__` });
    await journey.serves();
    const backup = await backedUp(tenantId, "promoted from a later generation");
    expect(backup.tables.find((t) => t.name === "backend.entries")?.rows).toBe(BigInt(journey.acknowledged.length));
    const { backup: verified } = await backups.verifyBackup({ backupId: backup.backupId });
    expect(verified?.verifyResult).toBe(VerifyResult.PASSED);
    const atBackup = journey.acknowledged.length;
    await journey.write();
    await backups.restoreBackup({ backupId: backup.backupId });
    journey.rewind(atBackup);
    await journey.serves();
    expect(await ownedSchemas("default", pool, tenantId)).toEqual([]);

    // Offboarded: its final backup, read from the database it was restored into, restores as a clone.
    const { tenant: deleted } = await mesh.platformClient.deleteTenant({ tenantId });
    expect(deleted?.status).toBe(TenantStatus.DELETED);
    expect(await mesh.sql("postgres", "select datname from pg_database where datdba = (select oid from pg_roles where rolname = $1) union all select rolname from pg_roles where rolname = $1", [roleOf(tenantId)])).toEqual([]);
    const clone = new Journey(mesh.uniqueTenantId("generation-afterlife"));
    await backups.restoreBackup({ backupId: deleted!.finalBackupId, targetTenantId: clone.tenantId, placement: Placement.POOLED });
    clone.acknowledged.push(...journey.acknowledged);
    await clone.serves();
  });
});

describe("a backup taken in one placement", () => {
  it("restores in place once the tenant has moved to the other, both ways", async () => {
    const promoted = await journeyOf("era-pooled", Placement.POOLED);
    const pooledEra = await backedUp(promoted.tenantId);
    const atPooledEra = promoted.acknowledged.length;
    await moved({ tenantId: promoted.tenantId, targetCluster: "default", targetPlacement: Placement.DEDICATED });
    await promoted.serves();
    await backups.restoreBackup({ backupId: pooledEra.backupId });
    promoted.rewind(atPooledEra);
    expect(await whereIs(promoted.tenantId)).toMatchObject({ placement: Placement.DEDICATED, prefix: "" });
    await promoted.serves();

    const demoted = await journeyOf("era-dedicated", Placement.DEDICATED);
    const dedicatedEra = await backedUp(demoted.tenantId);
    const atDedicatedEra = demoted.acknowledged.length;
    await moved({ tenantId: demoted.tenantId, targetCluster: "second", targetPlacement: Placement.POOLED });
    await demoted.serves();
    await backups.restoreBackup({ backupId: dedicatedEra.backupId });
    demoted.rewind(atDedicatedEra);
    expect(await whereIs(demoted.tenantId)).toMatchObject({ cluster: "second", placement: Placement.POOLED, prefix: `${basePrefix(demoted.tenantId)}r2__` });
    await demoted.serves();
  });
});

describe("a dedicated tenant restored in place, then moved away and back", () => {
  it("cannot undo the restore (its database is another now) and keeps serving from where it was moved", async () => {
    const journey = await journeyOf("restored-moved", Placement.DEDICATED);
    const { tenantId } = journey;
    const backup = await backedUp(tenantId);
    await backups.restoreBackup({ backupId: backup.backupId });
    await journey.serves();
    await moved({ tenantId, targetCluster: "second" });
    await moved({ tenantId, targetCluster: "default" });
    const { database } = await whereIs(tenantId);
    await journey.serves();
    const undo = await failure(backups.undoRestore({ tenantId }));
    expect([undo.code, undo.rawMessage]).toEqual([Code.FailedPrecondition, expect.stringMatching(/has moved .* can no longer be undone/)]);
    expect(await whereIs(tenantId)).toMatchObject({ cluster: "default", database });
    await journey.serves();
  });
});

describe("a dedicated tenant restored in place, then moved to another cluster", () => {
  // Moves' sources are dropped at once, and keeps looked at often (see below for why not for long).
  beforeAll(() => mesh.restartPlatform({ TENANTRY_MOVE_KEEP_MS: "0", TENANTRY_OFFBOARDING_CHECK_INTERVAL_MS: "200" }));
  afterAll(() => mesh.restartPlatform());

  it("leaves no role on the cluster it left once the database the restore kept there is dropped", async () => {
    const journey = await journeyOf("restored-away", Placement.DEDICATED);
    const { tenantId } = journey;
    const backup = await backedUp(tenantId);
    const { restore } = await backups.restoreBackup({ backupId: backup.backupId });
    await journey.serves();
    const away = await moved({ tenantId, targetCluster: "second" });
    await journey.serves();
    const deadline = Date.now() + 15_000;
    while (!(await moves.getMove({ moveId: away.moveId })).move!.sourceDropped && Date.now() < deadline) {
      await sleep(50);
    }
    // The database the restore keeps on the first cluster holds the tenant's role there.
    expect(await mesh.sql("postgres", "select rolname from pg_roles where rolname = $1", [roleOf(tenantId)])).toEqual([{ rolname: roleOf(tenantId) }]);
    await mesh.sql(mesh.platformDatabase, "update platform.restores set keep_until = now() - interval '1 second' where id = $1", [restore!.restoreId]);
    while ((await mesh.sql(mesh.platformDatabase, "select 1 from platform.restores where id = $1 and previous_dropped", [restore!.restoreId])).length === 0 && Date.now() < deadline + 15_000) {
      await sleep(50);
    }
    expect(await mesh.sql("postgres", "select datname from pg_database where datdba = (select oid from pg_roles where rolname = $1) union all select rolname from pg_roles where rolname = $1", [roleOf(tenantId)])).toEqual([]);
    await journey.serves();
  });
});

describe("a pooled tenant that leaves its pool database and comes back", () => {
  // Restores' keeps are looked at often. (Not for long: Platform's sweeps also remove the replication slots of moves it does not know, other meshes' on this server.)
  beforeAll(() => mesh.restartPlatform({ TENANTRY_OFFBOARDING_CHECK_INTERVAL_MS: "200" }));
  afterAll(() => mesh.restartPlatform());

  it("cannot undo a restore made before it left, and keeps serving when the generation that restore kept comes to its time", async () => {
    const journey = await journeyOf("returning", Placement.POOLED);
    const { tenantId } = journey;
    const base = basePrefix(tenantId);
    const { database: pool } = await whereIs(tenantId);
    const first = await backedUp(tenantId);
    const { restore: kept } = await backups.restoreBackup({ backupId: first.backupId });
    expect(await whereIs(tenantId)).toMatchObject({ prefix: `${base}r2__` });
    await journey.serves();

    await moved({ tenantId, targetCluster: "default", targetPlacement: Placement.DEDICATED });
    await journey.serves();
    await moved({ tenantId, targetCluster: "default", targetPlacement: Placement.POOLED });
    expect(await whereIs(tenantId)).toMatchObject({ placement: Placement.POOLED, database: pool, prefix: `${base}r2__` });
    await journey.serves();
    // The generation the restore kept went with the tenant's schemas when it left: nothing to switch back to.
    const undo = await failure(backups.undoRestore({ tenantId }));
    expect([undo.code, undo.rawMessage]).toEqual([Code.FailedPrecondition, expect.stringMatching(/can no longer be undone/)]);
    await journey.serves();

    // Restored again in place: the first generation is free, and serves.
    const second = await backedUp(tenantId);
    const { restore: latest } = await backups.restoreBackup({ backupId: second.backupId });
    expect(await whereIs(tenantId)).toMatchObject({ prefix: base });
    await journey.serves();
    // Both keeps end: only the generation the latest restore replaced goes.
    await mesh.sql(mesh.platformDatabase, "update platform.restores set keep_until = now() - interval '1 second' where id = any($1)", [[kept!.restoreId, latest!.restoreId]]);
    const deadline = Date.now() + 15_000;
    while ((await mesh.sql(mesh.platformDatabase, "select 1 from platform.restores where id = $1 and previous_dropped", [latest!.restoreId])).length === 0 && Date.now() < deadline) {
      await sleep(50);
    }
    expect(await ownedSchemas("default", pool, tenantId)).toEqual([`${base}auth`, `${base}backend`]);
    await journey.serves();
  });
});

describe("fleet migrations", () => {
  it("reach a promoted tenant with a schema prefix and a pooled tenant of a later generation, in their own schemas", async () => {
    const promoted = await journeyOf("fleet-promoted", Placement.POOLED);
    await moved({ tenantId: promoted.tenantId, targetCluster: "second", targetPlacement: Placement.DEDICATED });
    const generation = await journeyOf("fleet-generation", Placement.POOLED);
    const backup = await backedUp(generation.tenantId);
    await backups.restoreBackup({ backupId: backup.backupId });
    const demoted = await journeyOf("fleet-demoted", Placement.DEDICATED);
    await moved({ tenantId: demoted.tenantId, targetCluster: "second", targetPlacement: Placement.POOLED });
    const journeys = [promoted, generation, demoted];

    await mesh.restartBackend(newerBackendMigrations);
    const events = [];
    for await (const event of fleet.migrateTenants({ tenantIds: journeys.map((j) => j.tenantId) }, { timeoutMs: 120_000 })) {
      events.push(event);
    }
    expect(events.filter((e) => e.service === "backend").map((e) => [e.tenantId, MigrationOutcome[e.outcome], e.error]).sort()).toEqual(
      journeys.map((j) => [j.tenantId, "MIGRATED", ""]).sort(),
    );
    for (const journey of journeys) {
      const where = await whereIs(journey.tenantId);
      expect(where.prefix).not.toBe("");
      const migrated = await sqlOn(where.cluster, where.database, `select name from ${where.prefix}backend.mikro_orm_migrations where name = $1`, [upcomingBackendVersion]);
      expect(migrated, journey.tenantId).toHaveLength(1);
      expect(await sqlOn(where.cluster, where.database, "select 1 from pg_indexes where schemaname = $1 and indexname = 'entries_created_at'", [`${where.prefix}backend`])).toHaveLength(1);
      await journey.serves();
    }
  });
});

describe("a service added after the fact", () => {
  let later: TestMesh;
  beforeAll(async () => {
    // The other mesh's Platform would take this one's replication slots for leftovers of its own moves.
    await mesh.stopPlatform();
    later = await startTestMesh({ services: ["auth"], addedLater: ["backend"] });
  });
  afterAll(() => later?.stop());

  it("gets its schema, under the tenant's prefix, in a promoted tenant's database and in a pooled tenant's later generation", async () => {
    const operator = [operatorCredentialInterceptor(later.operatorToken)];
    const laterMoves = later.client("platform", MoveService, operator);
    const laterBackups = later.client("platform", BackupService, operator);
    const promoted = await later.createTenant({ owner, placement: Placement.POOLED });
    await laterMoves.moveTenant({ tenantId: promoted.tenantId, targetCluster: "default", targetPlacement: Placement.DEDICATED }, { timeoutMs: 120_000 });
    const generation = await later.createTenant({ owner, placement: Placement.POOLED });
    const { backup } = await laterBackups.createBackup({ tenantId: generation.tenantId });
    await laterBackups.restoreBackup({ backupId: backup!.backupId });

    await later.addService("backend");
    const events = [];
    for await (const event of later.client("platform", FleetService, operator).migrateTenants({ tenantIds: [promoted.tenantId, generation.tenantId] }, { timeoutMs: 120_000 })) {
      events.push(event);
    }
    expect(events.filter((e) => e.service === "backend").map((e) => [e.tenantId, MigrationOutcome[e.outcome], e.error]).sort()).toEqual(
      [promoted.tenantId, generation.tenantId].map((tenantId) => [tenantId, "MIGRATED", ""]).sort(),
    );
    const expected = [
      { tenantId: promoted.tenantId, database: roleOf(promoted.tenantId), schema: `${basePrefix(promoted.tenantId)}backend` },
      { tenantId: generation.tenantId, database: generation.database, schema: `${basePrefix(generation.tenantId)}r2__backend` },
    ];
    for (const { tenantId, database, schema } of expected) {
      const { route } = await later.platformMeshClient.resolveTenant({ tenantId });
      expect(route!.database + route!.schemaPrefix + "backend").toBe(database + schema);
      expect(await later.sql(database, "select pg_get_userbyid(nspowner) as owner from pg_namespace where nspname = $1", [schema])).toEqual([{ owner: roleOf(tenantId) }]);
      const { entry } = await retried(() => later.entries.createEntry({ title: "served by a service added later" }, headers(tenantId)));
      expect(entry?.title).toBe("served by a service added later");
      expect(await retried(() => later.login(tenantId, owner))).toMatch(/^ey/);
    }
  });
});
