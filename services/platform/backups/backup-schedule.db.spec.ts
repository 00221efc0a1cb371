import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, type Client } from "@connectrpc/connect";
import { access } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BackupService, BackupState, VerifyResult, type Backup } from "../../../gen/tenantry/platform/v1/backup_service_pb.js";
import { Placement, Tier } from "../../../gen/tenantry/platform/v1/platform_service_pb.js";
import { createLogger, operatorCredentialInterceptor, startTelemetry, type MeshServer } from "../../mesh/index.ts";
import { failure } from "../../testing/failure.ts";
import { freePort } from "../../testing/free-port.ts";
import { startTestMesh, type TestMesh } from "../../testing/test-mesh.ts";
import type { PlatformHooks } from "../platform.ts";
import { start as startPlatform } from "../start.ts";
import { scheduledLabel, spreadOffset, type BackupSchedule, type ScheduleRun } from "./backup-schedule.ts";
import { CronSchedule } from "./cron-schedule.ts";

const day = 24 * 3600 * 1000;
const windowMs = 2 * 3600 * 1000;
const settings = {
  TENANTRY_BACKUP_SCHEDULE: "0 3 * * *",
  TENANTRY_BACKUP_SCHEDULE_PREMIUM: "off",
  TENANTRY_BACKUP_SCHEDULE_ENTERPRISE: "0 */6 * * *",
  TENANTRY_BACKUP_WINDOW_MS: String(windowMs),
  TENANTRY_BACKUP_CONCURRENCY_PER_CLUSTER: "2",
  TENANTRY_BACKUP_VERIFY_SAMPLE: "1",
  TENANTRY_BACKUP_KEEP_LAST: "2",
  TENANTRY_BACKUP_KEEP_DAYS: "1",
  TENANTRY_OFFBOARDING_GRACE_MS: "0",
  // The specs run the schedule themselves (runDue); no timer does meanwhile.
  TENANTRY_OFFBOARDING_CHECK_INTERVAL_MS: "3600000",
};

/** A gate a hook stops at once, for the next backup or drill that reaches it: `entered` when it is there, `release` lets it go. */
function gate() {
  const entered = Promise.withResolvers<void>();
  const released = Promise.withResolvers<void>();
  return { entered: entered.promise, enter: entered.resolve, wait: released.promise, release: released.resolve };
}

/** The time both Platforms' schedules go by. */
let now = new Date();
let nextBackupGate: ReturnType<typeof gate> | undefined;
let nextDrillGate: ReturnType<typeof gate> | undefined;
/** Backups between their snapshot and their publication, at most, and right now. */
const inFlight = { now: 0, most: 0 };

let mesh: TestMesh;
let backups: Client<typeof BackupService>;
let schedule: BackupSchedule;
let otherSchedule: BackupSchedule;
let otherPlatform: MeshServer | undefined;

const hooks: PlatformHooks = {
  backupClock: () => now,
  backupSchedule: (s) => (schedule = s),
  afterBackupStep: async (_backupId, step) => {
    if (step === "snapshot") {
      inFlight.most = Math.max(inFlight.most, ++inFlight.now);
      const held = nextBackupGate;
      nextBackupGate = undefined;
      held?.enter();
      await held?.wait;
    }
    if (step === "publish") {
      inFlight.now -= 1;
    }
  },
  afterRestoreStep: async (kind, _restoreId, step) => {
    if (kind === "verify" && step === "load" && nextDrillGate !== undefined) {
      const held = nextDrillGate;
      nextDrillGate = undefined;
      held.enter();
      await held.wait;
    }
  },
};

beforeAll(async () => {
  mesh = await startTestMesh({ services: ["auth", "backend"], platformEnv: settings });
  await mesh.restartPlatform({}, hooks);
  backups = mesh.client("platform", BackupService, [operatorCredentialInterceptor(mesh.operatorToken)]);
  // A second Platform on the same database and data directory, as a second replica.
  otherPlatform = await startPlatform(
    { ...mesh.platformProcessEnv, TENANTRY_GRPC_PORT: String(await freePort()), TENANTRY_HTTP_PORT: "0" },
    createLogger("other-platform", process.env.TENANTRY_LOG_LEVEL ?? "silent"),
    startTelemetry({ service: "test", tenantSeries: 200 }),
    { backupClock: () => now, backupSchedule: (s) => (otherSchedule = s) },
  );
});
afterAll(async () => {
  await otherPlatform?.shutdown();
  await mesh?.stop();
});

/** When the daily schedule fires `days` days from now (1: next). */
function slotStart(days: number): Date {
  return new Date(new CronSchedule("0 3 * * *").slotAt(new Date())!.end.getTime() + (days - 1) * day);
}

async function backupsOf(tenantId: string): Promise<Backup[]> {
  return (await backups.listBackups({ tenantId, pageSize: 100 })).backups;
}

async function scheduledFor(tenantId: string, slot: Date): Promise<Backup[]> {
  return (await backupsOf(tenantId)).filter((b) => b.scheduledTime !== undefined && timestampDate(b.scheduledTime).getTime() === slot.getTime());
}

async function newTenant(tier = Tier.STANDARD, placement = Placement.UNSPECIFIED): Promise<string> {
  const tenantId = mesh.uniqueTenantId();
  await mesh.platformClient.createTenant({ tenantId, displayName: tenantId, tier, placement });
  return tenantId;
}

const exists = (file: string) => access(file).then(() => true, () => false);
const folderOf = (tenantId: string, backupId: string) => path.join(mesh.sharedEnv.TENANTRY_DATA_DIR, "backups", tenantId, backupId);

describe("the backup schedule", () => {
  it("backs each due tenant up once per slot across two Platforms, and not again after a restart", async () => {
    // A pooled tenant among them: scheduled as any other.
    const tenants = [await newTenant(), await newTenant(), await newTenant(Tier.STANDARD, Placement.POOLED)];
    const slot = slotStart(1);
    now = new Date(slot.getTime() + windowMs);

    // This Platform holds the schedule while a backup is under way: the other does nothing meanwhile.
    nextBackupGate = gate();
    const held = nextBackupGate;
    const first = schedule.runDue();
    await held.entered;
    expect(await otherSchedule.runDue()).toEqual({ ran: false, backedUp: [], failed: [], verified: [], deleted: [] } satisfies ScheduleRun);
    held.release();
    const run = await first;
    expect(run).toMatchObject({ ran: true, failed: [] });
    expect(run.backedUp.toSorted()).toEqual(tenants.toSorted());

    for (const tenantId of tenants) {
      const taken = await scheduledFor(tenantId, slot);
      expect(taken).toHaveLength(1);
      expect(taken[0]).toMatchObject({ state: BackupState.SUCCEEDED, label: scheduledLabel({ start: slot, end: new Date(slot.getTime() + day) }) });
    }

    // Either Platform, and this one started again, finds the slot done in the registry.
    expect(await otherSchedule.runDue()).toMatchObject({ ran: true, backedUp: [], failed: [] });
    await mesh.restartPlatform({}, hooks);
    expect(await schedule.runDue()).toMatchObject({ ran: true, backedUp: [], failed: [] });
    for (const tenantId of tenants) {
      expect(await scheduledFor(tenantId, slot)).toHaveLength(1);
    }
  });

  it("spreads a slot's tenants over the window, each at a time of its own, a bounded number at once per cluster", async () => {
    await Promise.all([newTenant(), newTenant(), newTenant(), newTenant()]);
    const slot = slotStart(2);
    const due = (await mesh.platformClient.listTenants({ pageSize: 100 })).tenants
      .filter((t) => t.tier === Tier.STANDARD)
      .map((t) => ({ tenantId: t.tenantId, at: spreadOffset(t.tenantId, windowMs) }))
      .toSorted((a, b) => a.at - b.at);
    const middle = due[Math.floor(due.length / 2) - 1]!;
    now = new Date(slot.getTime() + middle.at);
    const early = await schedule.runDue();
    expect(early.backedUp.toSorted()).toEqual(due.filter((t) => t.at <= middle.at).map((t) => t.tenantId).toSorted());

    now = new Date(slot.getTime() + windowMs);
    inFlight.most = 0;
    const late = await schedule.runDue();
    expect(late.backedUp.toSorted()).toEqual(due.filter((t) => t.at > middle.at).map((t) => t.tenantId).toSorted());
    expect(late.backedUp.length).toBeGreaterThan(2);
    expect(inFlight.most).toBeLessThanOrEqual(2);
  });

  it("follows each tier's own schedule", async () => {
    const premium = await newTenant(Tier.PREMIUM);
    const enterprise = await newTenant(Tier.ENTERPRISE);
    const standard = await newTenant();
    const slot = slotStart(3);
    now = new Date(slot.getTime() + windowMs);
    const run = await schedule.runDue();
    expect(run.backedUp).toContain(standard);
    expect(run.backedUp).not.toContain(premium);
    // Every six hours: the slot began at midnight, and its window is over by 05:00.
    expect(run.backedUp).toContain(enterprise);
    const midnight = new Date(slot.getTime() - 3 * 3600 * 1000);
    expect(await scheduledFor(enterprise, midnight)).toHaveLength(1);
    expect(await backupsOf(premium)).toEqual([]);
  });

  it("verifies a sample of each slot, tenants never verified first, and records it on the backup", async () => {
    /** The verified backup of the daily slot that began at `slot`. */
    const drilledIn = async (slot: Date) => {
      const { backups: all } = await backups.listBackups({ pageSize: 500 });
      const ofSlot = all.filter((b) => b.scheduledTime !== undefined && timestampDate(b.scheduledTime).getTime() === slot.getTime());
      expect(ofSlot.length).toBeGreaterThan(1);
      const drilled = ofSlot.filter((b) => b.verifyTime !== undefined);
      expect(drilled).toHaveLength(1);
      return drilled[0]!;
    };
    const slot = slotStart(4);
    now = new Date(slot.getTime() + windowMs);
    const run = await schedule.runDue();
    // One for the daily slot, one for ENTERPRISE's slot of six hours.
    expect(run.verified).toHaveLength(2);
    const drilled = await drilledIn(slot);
    expect(run.verified).toContain(drilled.backupId);
    expect(drilled).toMatchObject({ verifyResult: VerifyResult.PASSED, verifyError: "" });
    // The slot's sample is done.
    expect((await schedule.runDue()).verified).toEqual([]);

    const nextSlot = slotStart(5);
    now = new Date(nextSlot.getTime() + windowMs);
    await schedule.runDue();
    const next = await drilledIn(nextSlot);
    expect(next.verifyResult).toBe(VerifyResult.PASSED);
    expect(next.tenantId).not.toBe(drilled.tenantId);
  });

  it("keeps a tenant's last backups and the young ones, deletes the rest, FAILED ones too, but never one a drill is using", async () => {
    // PREMIUM has no schedule here: only these backups are the tenant's.
    const tenantId = await newTenant(Tier.PREMIUM);
    const { tenant } = await mesh.platformClient.getTenant({ tenantId });
    const take = async () => (await backups.createBackup({ tenantId })).backup!;
    const oldest = await take();
    const older = await take();
    await mesh.sql(tenant!.database, `select lo_from_bytea(0, 'blob'::bytea)`);
    await failure(backups.createBackup({ tenantId }));
    await mesh.sql(tenant!.database, `select lo_unlink(oid) from pg_largeobject_metadata`);
    const newer = await take();
    const failed = (await backupsOf(tenantId)).find((b) => b.state === BackupState.FAILED)!;
    expect(failed).toBeDefined();

    // Young, all are kept.
    now = new Date();
    expect((await schedule.runDue()).deleted).toEqual([]);
    expect(await backupsOf(tenantId)).toHaveLength(4);

    // Two days on: the last two SUCCEEDED stay; the oldest is being verified, and stays until that ends.
    nextDrillGate = gate();
    const held = nextDrillGate;
    const drill = backups.verifyBackup({ backupId: oldest.backupId });
    await held.entered;
    now = new Date(Date.now() + 2 * day);
    const run = await schedule.runDue();
    expect(run.deleted).toContain(failed.backupId);
    expect(run.deleted).not.toContain(oldest.backupId);
    expect(await exists(folderOf(tenantId, oldest.backupId))).toBe(true);
    held.release();
    expect((await drill).backup?.verifyResult).toBe(VerifyResult.PASSED);

    expect((await schedule.runDue()).deleted).toContain(oldest.backupId);
    expect((await backupsOf(tenantId)).map((b) => b.backupId)).toEqual([newer.backupId, older.backupId]);
    expect(await exists(folderOf(tenantId, oldest.backupId))).toBe(false);
    expect(await exists(folderOf(tenantId, newer.backupId))).toBe(true);
    expect((await failure(backups.getBackup({ backupId: failed.backupId }))).code).toBe(Code.NotFound);
  });

  it("keeps an offboarded tenant's backups, its final one among them, only while younger than the retention days", async () => {
    const tenantId = await newTenant(Tier.PREMIUM);
    const { backup: earlier } = await backups.createBackup({ tenantId });
    const { tenant } = await mesh.platformClient.deleteTenant({ tenantId });
    const final = tenant!.finalBackupId;
    expect((await backups.getBackup({ backupId: final })).backup).toMatchObject({ state: BackupState.SUCCEEDED, label: "final backup before offboarding" });

    now = new Date();
    expect((await schedule.runDue()).deleted).toEqual([]);
    now = new Date(Date.now() + 2 * day);
    // Fewer than TENANTRY_BACKUP_KEEP_LAST, but the tenant is gone.
    expect((await schedule.runDue()).deleted).toEqual(expect.arrayContaining([earlier!.backupId, final]));
    expect(await backupsOf(tenantId)).toEqual([]);
  });
});
