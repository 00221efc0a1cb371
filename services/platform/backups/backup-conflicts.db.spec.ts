import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BackupService, BackupState, RestoreState, VerifyResult } from "../../../gen/tenantry/platform/v1/backup_service_pb.js";
import { TenantStatus } from "../../../gen/tenantry/platform/v1/platform_service_pb.js";
import { operatorCredentialInterceptor, tenantIdHeader } from "../../mesh/index.ts";
import { failure } from "../../testing/failure.ts";
import { holdLock } from "../../testing/held-lock.ts";
import { startTestMesh, type TestMesh } from "../../testing/test-mesh.ts";

let mesh: TestMesh;
let backups: Client<typeof BackupService>;
beforeAll(async () => {
  mesh = await startTestMesh({ services: ["auth", "backend"] });
  backups = mesh.client("platform", BackupService, [operatorCredentialInterceptor(mesh.operatorToken)]);
});
afterAll(() => mesh?.stop());

const headers = (tenantId: string) => ({ headers: { [tenantIdHeader]: tenantId } });

/** A promise and the function that resolves it: a step of Platform held until the test lets it go. */
function gate(): { opened: Promise<void>; open: () => void; readonly isOpen: boolean } {
  let isOpen = false;
  let resolve!: () => void;
  const opened = new Promise<void>((r) => (resolve = r));
  return {
    opened,
    open: () => {
      isOpen = true;
      resolve();
    },
    get isOpen() {
      return isOpen;
    },
  };
}

/** The tenant's databases on the server (its own and those restores made), with whether they take connections. */
async function databasesOf(tenantId: string): Promise<{ datname: string; datallowconn: boolean }[]> {
  return mesh.sql("postgres", "select datname, datallowconn from pg_database where datname like $1 order by datname", [`tenant\\_${tenantId.replaceAll("-", "\\_")}%`]);
}

describe("a backup label", () => {
  it("with a control character is INVALID_ARGUMENT, and nothing is recorded", async () => {
    const { tenantId } = await mesh.createTenant();
    for (const label of ["a\u0000b", "two\nlines", "bell\u0007", "esc\u001b[31m"]) {
      const error = await failure(backups.createBackup({ tenantId, label }));
      expect([error.code, error.rawMessage]).toEqual([Code.InvalidArgument, expect.stringMatching(/^label has a control character \(U\+[0-9A-F]{4}\)/)]);
    }
    expect((await backups.listBackups({ tenantId })).backups).toEqual([]);
    // Each refusal is in the audit log, the NUL as U+FFFD.
    const { events } = await mesh.platformClient.listAuditEvents({ tenantId });
    const refused = events.filter((e) => e.action === "CreateBackup").map((e) => JSON.parse(e.detail) as { label: string; code: string });
    expect(refused.map((d) => [d.label, d.code])).toEqual([["esc\u001b[31m", "InvalidArgument"], ["bell\u0007", "InvalidArgument"], ["two\nlines", "InvalidArgument"], ["a\uFFFDb", "InvalidArgument"]]);
    const { backup } = await backups.createBackup({ tenantId, label: "  before the import ✓  " });
    expect(backup?.label).toBe("before the import ✓");
  });

  it("a clone's display name with a control character is INVALID_ARGUMENT, and no tenant is made", async () => {
    const { tenantId } = await mesh.createTenant();
    const { backup } = await backups.createBackup({ tenantId });
    const cloneId = mesh.uniqueTenantId("nul");
    const error = await failure(backups.restoreBackup({ backupId: backup!.backupId, targetTenantId: cloneId, displayName: "a\u0000b" }));
    expect([error.code, error.rawMessage]).toEqual([Code.InvalidArgument, expect.stringMatching(/^display_name has a control character \(U\+0000\)/)]);
    expect((await failure(mesh.platformClient.getTenant({ tenantId: cloneId }))).code).toBe(Code.NotFound);
  });
});

describe("a backup requested while another of the tenant is being taken", () => {
  it("is FAILED_PRECONDITION naming the one under way, which ends as it would have", async () => {
    const { tenantId } = await mesh.createTenant();
    const held = gate();
    const reached = gate();
    const heldBackups: string[] = [];
    await mesh.restartPlatform({}, {
      afterBackupStep: async (id, step) => {
        // Only the first backup waits: any other goes on.
        if (step === "snapshot" && (heldBackups.length === 0 || heldBackups[0] === id)) {
          heldBackups.push(id);
          reached.open();
          await held.opened;
        }
      },
    });
    try {
      const first = backups.createBackup({ tenantId, label: "first" });
      await reached.opened;
      const [running] = (await backups.listBackups({ tenantId })).backups;
      const error = await failure(backups.createBackup({ tenantId, label: "second" }));
      expect(error.code).toBe(Code.FailedPrecondition);
      expect(error.rawMessage).toBe(`backup "${running!.backupId}" of tenant "${tenantId}" is being taken; wait for it to end (GetBackup) before taking another`);
      // Another tenant's backup is not held up.
      const other = await mesh.createTenant();
      held.open();
      expect((await backups.createBackup({ tenantId: other.tenantId })).backup?.state).toBe(BackupState.SUCCEEDED);
      expect((await first).backup?.state).toBe(BackupState.SUCCEEDED);
      expect((await backups.listBackups({ tenantId })).backups.map((b) => b.label)).toEqual(["first"]);
    } finally {
      held.open();
      await mesh.restartPlatform();
    }
  });

  it("does not hold up offboarding: the final backup is taken beside it, and the other ends FAILED saying why", async () => {
    const { tenantId } = await mesh.createTenant();
    const held = gate();
    const reached = gate();
    await mesh.restartPlatform({}, {
      afterBackupStep: async (_id, step) => {
        if (step === "snapshot" && !reached.isOpen) {
          reached.open();
          await held.opened;
        }
      },
    });
    try {
      const running = backups.createBackup({ tenantId, label: "running" });
      await reached.opened;
      const { tenant } = await mesh.platformClient.deleteTenant({ tenantId });
      expect(tenant?.status).toBe(TenantStatus.OFFBOARDING);
      expect((await backups.getBackup({ backupId: tenant!.finalBackupId })).backup?.state).toBe(BackupState.SUCCEEDED);
      held.open();
      // Offboarding revoked the tenant's login: the backup that was waiting cannot go on.
      const stopped = await failure(running);
      expect([stopped.code, stopped.rawMessage]).toEqual([Code.FailedPrecondition, `tenant "${tenantId}" became offboarding while the backup was being taken, which ended it; its final backup is the one to keep`]);
      const [taken] = (await backups.listBackups({ tenantId })).backups.filter((b) => b.label === "running");
      expect([taken?.state, taken?.failureReason]).toEqual([BackupState.FAILED, stopped.rawMessage]);
    } finally {
      held.open();
      await mesh.restartPlatform();
    }
  });

  it("goes ahead when the one left RUNNING belongs to a Platform that stopped, which is marked FAILED", async () => {
    const { tenantId, database } = await mesh.createTenant();
    const abandoned = randomUUID();
    await mesh.sql(
      mesh.platformDatabase,
      `insert into platform.backups (id, tenant_id, label, state, cluster, database, size_bytes, tables, table_count, schema_versions, created_at)
       values ($1, $2, 'abandoned', 'running', 'default', $3, 0, '[]', 0, '{}', now())`,
      [abandoned, tenantId, database],
    );
    const { backup } = await backups.createBackup({ tenantId });
    expect(backup?.state).toBe(BackupState.SUCCEEDED);
    const { backup: left } = await backups.getBackup({ backupId: abandoned });
    expect([left?.state, left?.failureReason]).toEqual([BackupState.FAILED, "Platform stopped while taking it; take another"]);
  });
});

describe("an undo requested while a restore of the tenant runs", () => {
  it("is FAILED_PRECONDITION, and the restore ends with the tenant on its database and the one it replaced kept", async () => {
    const { tenantId, database: original } = await mesh.createTenant();
    await mesh.entries.createEntry({ title: "in the backup" }, headers(tenantId));
    const { backup } = await backups.createBackup({ tenantId });
    // An earlier in-place restore that could be undone.
    const { tenant: first } = await backups.restoreBackup({ backupId: backup!.backupId });
    const held = gate();
    const reached = gate();
    await mesh.restartPlatform({}, {
      afterRestoreStep: async (kind, _id, step) => {
        if (kind === "in_place" && step === "load") {
          reached.open();
          await held.opened;
        }
      },
    });
    try {
      const second = backups.restoreBackup({ backupId: backup!.backupId });
      await reached.opened;
      const error = await failure(backups.undoRestore({ tenantId }));
      expect(error.code).toBe(Code.FailedPrecondition);
      expect(error.rawMessage).toMatch(new RegExp(`^a restore of tenant "${tenantId}" is under way \\(restore "[0-9a-f-]{36}"\\); wait for it to end, then try again$`));
      held.open();
      const { restore, tenant } = await second;
      expect([restore?.state, restore?.previousDatabase, tenant?.status]).toEqual([RestoreState.SUCCEEDED, first!.database, TenantStatus.ACTIVE]);
      // Served from the second restore's database; the two it replaced are kept, closed, for their undos.
      expect(await databasesOf(tenantId)).toEqual(
        [
          { datname: original, datallowconn: false },
          { datname: first!.database, datallowconn: false },
          { datname: tenant!.database, datallowconn: true },
        ].sort((a, b) => a.datname.localeCompare(b.datname)),
      );
      const { tenant: undone } = await backups.undoRestore({ tenantId });
      expect(undone?.database).toBe(first!.database);
    } finally {
      held.open();
      await mesh.restartPlatform();
    }
  });

  it("and a restore requested while an undo of the tenant is pending is FAILED_PRECONDITION too", async () => {
    const { tenantId } = await mesh.createTenant();
    const { backup } = await backups.createBackup({ tenantId });
    const { tenant: restored } = await backups.restoreBackup({ backupId: backup!.backupId });
    const held = gate();
    const reached = gate();
    await mesh.restartPlatform({}, {
      afterRestoreStep: async (kind, _id, step) => {
        if (kind === "undo" && step === "suspend") {
          reached.open();
          await held.opened;
        }
      },
    });
    try {
      const undo = backups.undoRestore({ tenantId });
      await reached.opened;
      const error = await failure(backups.restoreBackup({ backupId: backup!.backupId }));
      expect(error.code).toBe(Code.FailedPrecondition);
      expect(error.rawMessage).toMatch(new RegExp(`^the undo of a restore of tenant "${tenantId}" is under way \\(restore "[0-9a-f-]{36}"\\); wait for it to end, then try again$`));
      held.open();
      const { tenant } = await undo;
      expect(tenant?.database).not.toBe(restored!.database);
      expect((await databasesOf(tenantId)).map((d) => d.datname)).toEqual([tenant!.database]);
    } finally {
      held.open();
      await mesh.restartPlatform();
    }
  });
});

describe("offboarding requested while a restore of the tenant runs", () => {
  it("is FAILED_PRECONDITION, and the restore ends as it would have; the tenant can be deleted after", async () => {
    const { tenantId } = await mesh.createTenant();
    const { backup } = await backups.createBackup({ tenantId });
    const held = gate();
    const reached = gate();
    await mesh.restartPlatform({}, {
      afterRestoreStep: async (kind, _id, step) => {
        if (kind === "in_place" && step === "load") {
          reached.open();
          await held.opened;
        }
      },
    });
    try {
      const restoring = backups.restoreBackup({ backupId: backup!.backupId });
      await reached.opened;
      const error = await failure(mesh.platformClient.deleteTenant({ tenantId }));
      expect(error.code).toBe(Code.FailedPrecondition);
      expect(error.rawMessage).toMatch(new RegExp(`^a restore of tenant "${tenantId}" is under way \\(restore "[0-9a-f-]{36}"\\); wait for it to end, then try again$`));
      expect((await mesh.platformClient.getTenant({ tenantId })).tenant?.status).toBe(TenantStatus.ACTIVE);
      held.open();
      const { tenant } = await restoring;
      expect(tenant?.status).toBe(TenantStatus.ACTIVE);
      expect((await mesh.platformClient.deleteTenant({ tenantId })).tenant?.status).toBe(TenantStatus.OFFBOARDING);
    } finally {
      held.open();
      await mesh.restartPlatform();
    }
  });
});

describe("listing the backups of a tenant", () => {
  it("that was never a tenant is NOT_FOUND, as backing it up is, rather than an empty list", async () => {
    const tenantId = mesh.uniqueTenantId("typo");
    const error = await failure(backups.listBackups({ tenantId }));
    expect([error.code, error.rawMessage]).toEqual([Code.NotFound, `tenant "${tenantId}" not found`]);
    const { tenantId: fresh } = await mesh.createTenant();
    expect((await backups.listBackups({ tenantId: fresh })).backups).toEqual([]);
  });
});

describe("two verifications of one backup requested at once", () => {
  it("run one drill: the other is FAILED_PRECONDITION", async () => {
    const { tenantId } = await mesh.createTenant();
    const { backup } = await backups.createBackup({ tenantId });
    // Both requests get as far as recording their drill, and wait there.
    const lock = await holdLock(mesh.databaseUrl(mesh.platformDatabase), "lock table platform.restores in share mode");
    const drills = [backups.verifyBackup({ backupId: backup!.backupId }), backups.verifyBackup({ backupId: backup!.backupId })].map((call) =>
      call.then(
        ({ backup: verified }) => ({ result: verified?.verifyResult }),
        (error: unknown) => ({ code: ConnectError.from(error).code, message: ConnectError.from(error).rawMessage }),
      ),
    );
    for (;;) {
      const [waiting] = await mesh.sql<{ n: number }>(
        mesh.platformDatabase,
        "select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock' and (query ilike '%restores%' or query ilike '%advisory%')",
      );
      if (waiting!.n >= 2) {
        break;
      }
      await sleep(10);
    }
    await lock.release();
    expect(await Promise.all(drills)).toEqual(
      expect.arrayContaining([
        { result: VerifyResult.PASSED },
        { code: Code.FailedPrecondition, message: `backup "${backup!.backupId}" is being restored or verified; wait for it to end` },
      ]),
    );
    const [drillCount] = await mesh.sql<{ n: number }>(mesh.platformDatabase, "select count(*)::int as n from platform.restores where backup_id = $1", [backup!.backupId]);
    expect(drillCount!.n).toBe(1);
  });
});
