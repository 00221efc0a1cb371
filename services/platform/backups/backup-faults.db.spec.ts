import { Code, type Client } from "@connectrpc/connect";
import { Migration } from "@mikro-orm/migrations";
import { randomUUID } from "node:crypto";
import { copyFile, readdir, readFile, truncate, writeFile } from "node:fs/promises";
import path from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BackupService, BackupState, VerifyResult } from "../../../gen/tenantry/platform/v1/backup_service_pb.js";
import { TenantStatus } from "../../../gen/tenantry/platform/v1/platform_service_pb.js";
import { CreateEntries } from "../../backend/migrations/create-entries.ts";
import { migrations as backendMigrations } from "../../backend/migrations/index.ts";
import { operatorCredentialInterceptor, tenantIdHeader } from "../../mesh/index.ts";
import { failure } from "../../testing/failure.ts";
import { startTestMesh, type TestMesh } from "../../testing/test-mesh.ts";

let mesh: TestMesh;
let backups: Client<typeof BackupService>;
beforeAll(async () => {
  mesh = await startTestMesh({ services: ["auth", "backend"] });
  backups = mesh.client("platform", BackupService, [operatorCredentialInterceptor(mesh.operatorToken)]);
});
afterAll(() => mesh?.stop());

const headers = (tenantId: string) => ({ headers: { [tenantIdHeader]: tenantId } });

/** A backup of a new tenant with a few entries. */
async function backupOfNewTenant(): Promise<{ tenantId: string; backupId: string }> {
  const { tenantId } = await mesh.createTenant();
  for (const title of ["a", "b", "c"]) {
    await mesh.entries.createEntry({ title, body: "x".repeat(2000) }, headers(tenantId));
  }
  const { backup } = await backups.createBackup({ tenantId });
  return { tenantId, backupId: backup!.backupId };
}

/** The folder of a published backup's files. */
const folderOf = (backup: { tenantId: string; backupId: string }) => path.join(mesh.sharedEnv.TENANTRY_DATA_DIR, "backups", backup.tenantId, backup.backupId);

/** Every file below a folder (none when there is no such folder). */
async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name));
}

/** The databases and roles a clone of that id would have. */
async function traces(tenantId: string): Promise<unknown[]> {
  const name = `tenant_${tenantId.replaceAll("-", "_")}`;
  return mesh.sql("postgres", "select datname as name from pg_database where datname = $1 union all select rolname from pg_roles where rolname = $1", [name]);
}

describe("backup requests", () => {
  it("are refused for malformed and unknown ids, with the code that says which", async () => {
    expect((await failure(backups.getBackup({ backupId: "not-a-uuid" }))).code).toBe(Code.InvalidArgument);
    expect((await failure(backups.getBackup({ backupId: randomUUID() }))).code).toBe(Code.NotFound);
    expect((await failure(backups.deleteBackup({ backupId: randomUUID() }))).code).toBe(Code.NotFound);
    expect((await failure(backups.verifyBackup({ backupId: randomUUID() }))).code).toBe(Code.NotFound);
    expect((await failure(backups.restoreBackup({ backupId: randomUUID() }))).code).toBe(Code.NotFound);
    expect((await failure(backups.createBackup({ tenantId: "Not_An_Id" }))).code).toBe(Code.InvalidArgument);
    expect((await failure(backups.createBackup({ tenantId: mesh.uniqueTenantId("nobody") }))).code).toBe(Code.NotFound);
    expect((await failure(backups.listBackups({ tenantId: "x" }))).code).toBe(Code.InvalidArgument);
    expect((await failure(backups.listBackups({ pageToken: "bogus" }))).code).toBe(Code.InvalidArgument);
    expect((await failure(backups.undoRestore({ tenantId: (await mesh.createTenant()).tenantId }))).code).toBe(Code.NotFound);
    expect((await failure(backups.createBackup({ tenantId: (await mesh.createTenant()).tenantId, label: "x".repeat(201) }))).code).toBe(Code.InvalidArgument);
  });

  it("keep tenants apart: a tenant's list holds only its backups, a clone cannot take an existing id, a target id must be well formed", async () => {
    const first = await backupOfNewTenant();
    const second = await backupOfNewTenant();
    const listed = await backups.listBackups({ tenantId: first.tenantId });
    expect(listed.backups.map((b) => b.backupId)).toEqual([first.backupId]);
    const pages = [await backups.listBackups({ pageSize: 1 })];
    pages.push(await backups.listBackups({ pageSize: 1, pageToken: pages[0]!.nextPageToken }));
    expect(pages.map((p) => p.backups[0]!.backupId)).toEqual([second.backupId, first.backupId]);
    expect((await failure(backups.restoreBackup({ backupId: first.backupId, targetTenantId: second.tenantId }))).code).toBe(Code.AlreadyExists);
    expect((await failure(backups.restoreBackup({ backupId: first.backupId, targetTenantId: "Bad Id" }))).code).toBe(Code.InvalidArgument);
    // The second tenant is untouched by the refused clone.
    expect((await mesh.entries.listEntries({}, headers(second.tenantId))).entries).toHaveLength(3);
  });

  it("refuse a database with large objects, which backups do not carry", async () => {
    const tenant = await mesh.createTenant();
    await mesh.sql(tenant.database, `select lo_from_bytea(0, 'blob'::bytea)`);
    const error = await failure(backups.createBackup({ tenantId: tenant.tenantId }));
    expect(error.code).toBe(Code.FailedPrecondition);
    expect(error.rawMessage).toMatch(/1 large object/);
    const { backups: listed } = await backups.listBackups({ tenantId: tenant.tenantId });
    expect(listed.map((b) => [b.state, b.failureReason])).toEqual([[BackupState.FAILED, error.rawMessage]]);
    expect(await filesUnder(path.join(mesh.sharedEnv.TENANTRY_DATA_DIR, "backups", tenant.tenantId))).toEqual([]);
  });

  it("delete a backup's files and record", async () => {
    const backup = await backupOfNewTenant();
    await backups.deleteBackup({ backupId: backup.backupId });
    expect((await failure(backups.getBackup({ backupId: backup.backupId }))).code).toBe(Code.NotFound);
    expect(await readdir(folderOf(backup)).catch((e: NodeJS.ErrnoException) => e.code)).toBe("ENOENT");
  });
});

describe("a damaged backup", () => {
  for (const [damage, change] of [
    ["a flipped byte", async (file: string) => {
      const bytes = await readFile(file);
      bytes[Math.floor(bytes.length / 2)]! ^= 0x01;
      await writeFile(file, bytes);
    }],
    ["a truncated file", async (file: string) => truncate(file, Math.floor((await readFile(file)).length / 2))],
    ["the same file of another backup of the tenant", async (file: string, tenantId: string) => {
      const { backup: other } = await backups.createBackup({ tenantId });
      await copyFile(path.join(folderOf({ tenantId, backupId: other!.backupId }), path.basename(file)), file);
    }],
  ] as const) {
    it(`with ${damage} in a table's file is refused: no clone is left, the tenant restored in place is untouched, and verification fails`, async () => {
      const backup = await backupOfNewTenant();
      const { backup: record } = await backups.getBackup({ backupId: backup.backupId });
      const entries = record!.tables.findIndex((t) => t.name === "backend.entries");
      await change(path.join(folderOf(backup), `table-${String(entries + 1).padStart(4, "0")}.copy.zst`), backup.tenantId);

      const cloneId = mesh.uniqueTenantId("damaged");
      const cloned = await failure(backups.restoreBackup({ backupId: backup.backupId, targetTenantId: cloneId }));
      expect(cloned.code).toBe(Code.FailedPrecondition);
      expect(cloned.rawMessage).toMatch(/\(backend\.entries\) of backup "[0-9a-f-]{36}" failed its integrity check: it was changed, cut short, or belongs to another backup/);
      expect((await failure(mesh.platformClient.getTenant({ tenantId: cloneId }))).code).toBe(Code.NotFound);
      expect(await traces(cloneId)).toEqual([]);

      const before = (await mesh.platformClient.getTenant({ tenantId: backup.tenantId })).tenant!;
      expect((await failure(backups.restoreBackup({ backupId: backup.backupId }))).code).toBe(Code.FailedPrecondition);
      const after = (await mesh.platformClient.getTenant({ tenantId: backup.tenantId })).tenant!;
      expect([after.status, after.database]).toEqual([TenantStatus.ACTIVE, before.database]);
      expect(await mesh.sql("postgres", "select datname from pg_database where datname like $1", [`${before.database}\\_r%`])).toEqual([]);
      expect((await mesh.entries.listEntries({}, headers(backup.tenantId))).entries).toHaveLength(3);

      const { backup: verified } = await backups.verifyBackup({ backupId: backup.backupId });
      expect(verified?.verifyResult).toBe(VerifyResult.FAILED);
      expect(verified?.verifyError).toMatch(/backend\.entries/);
    });
  }

  it("of another major format version is refused, naming the version", async () => {
    const backup = await backupOfNewTenant();
    const manifest = path.join(folderOf(backup), "manifest.json");
    const envelope = JSON.parse(await readFile(manifest, "utf8")) as { format: string };
    await writeFile(manifest, JSON.stringify({ ...envelope, format: "tenantry-backup/2" }));
    const error = await failure(backups.restoreBackup({ backupId: backup.backupId, targetTenantId: mesh.uniqueTenantId("v2") }));
    expect(error.code).toBe(Code.FailedPrecondition);
    expect(error.rawMessage).toMatch(/"tenantry-backup\/2"/);
  });
});

describe("a backup under write load", () => {
  it("blocks no writes and holds each transaction whole or not at all", async () => {
    const tenant = await mesh.createTenant();
    const writer = new pg.Client({ connectionString: mesh.databaseUrl(tenant.database) });
    await writer.connect();
    let committed = 0;
    let failed = 0;
    let writing = true;
    // Each transaction moves one unit between two entries' versions: their sum is always 1000.
    const [a, b] = [randomUUID(), randomUUID()];
    await writer.query("insert into backend.entries (id, title, version) values ($1, 'a', 1000), ($2, 'b', 0)", [a, b]);
    const writes = (async () => {
      for (let i = 0; writing; i++) {
        try {
          await writer.query("begin");
          await writer.query("update backend.entries set version = version - 1 where id = $1", [i % 2 === 0 ? a : b]);
          await writer.query("insert into backend.entries (id, title) values ($1, $2)", [randomUUID(), `write ${i}`]);
          await writer.query("update backend.entries set version = version + 1 where id = $1", [i % 2 === 0 ? b : a]);
          await writer.query("commit");
          committed++;
        } catch {
          failed++;
          await writer.query("rollback").catch(() => undefined);
        }
      }
    })();
    // Writes made while the snapshot is held, and during the whole backup.
    await mesh.restartPlatform({}, {
      afterBackupStep: async (_id, step) => {
        if (step === "snapshot") {
          const until = committed + 50;
          while (committed < until) {
            await new Promise((resolve) => setTimeout(resolve, 5));
          }
        }
      },
    });
    const atStart = committed;
    const { backup } = await backups.createBackup({ tenantId: tenant.tenantId });
    const during = committed - atStart;
    writing = false;
    await writes;
    await writer.end();
    await mesh.restartPlatform();
    expect(failed).toBe(0);
    expect(during).toBeGreaterThanOrEqual(50);

    const cloneId = mesh.uniqueTenantId("snapshot");
    const { tenant: clone } = await backups.restoreBackup({ backupId: backup!.backupId, targetTenantId: cloneId });
    const [sums] = await mesh.sql<{ sum: number; rows: number }>(clone!.database, "select (select sum(version)::int from backend.entries where id in ($1, $2)) as sum, count(*)::int as rows from backend.entries", [a, b]);
    expect(sums!.sum).toBe(1000);
    const rows = Number(backup!.tables.find((t) => t.name === "backend.entries")!.rows);
    expect(sums!.rows).toBe(rows);
    // Taken at the snapshot: the writes of the wait above are not in it.
    expect(rows - 2).toBeLessThanOrEqual(committed - 50);
    console.info(`backup under load: ${during} transactions committed while it ran, 0 failed`);
  });
});

describe("a backup taken at older schema versions", () => {
  it("restores at those versions and ends migrated to the newest", async () => {
    const backup = await backupOfNewTenant();
    class AddEntryRating extends Migration {
      override up(): void {
        this.addSql("alter table backend.entries add column rating int not null default 3");
      }
    }
    const upcoming = `${String(backendMigrations.length + 1).padStart(4, "0")}-add-entry-rating`;
    await mesh.restartBackend([...backendMigrations, { name: upcoming, class: AddEntryRating }]);
    try {
      const cloneId = mesh.uniqueTenantId("older");
      const { tenant } = await backups.restoreBackup({ backupId: backup.backupId, targetTenantId: cloneId });
      const rows = await mesh.sql(tenant!.database, "select title, rating from backend.entries order by title");
      expect(rows).toEqual(["a", "b", "c"].map((title) => ({ title, rating: 3 })));
      const [ledger] = await mesh.sql(mesh.platformDatabase, "select version from platform.tenant_schema_versions where tenant_id = $1 and service = 'backend'", [cloneId]);
      expect(ledger).toEqual({ version: upcoming });
      expect((await mesh.entries.listEntries({}, headers(cloneId))).entries).toHaveLength(3);
    } finally {
      await mesh.restartBackend(backendMigrations);
    }
  });

  it("is refused when a service no longer makes the tables it holds, naming the table", async () => {
    const backup = await backupOfNewTenant();
    // A Backend whose history was rewritten: the version the backup names now makes other columns.
    class RewrittenCreateEntries extends CreateEntries {
      override up(): void {
        super.up();
        this.addSql("alter table backend.entries rename column body to text");
      }
    }
    const rewritten = backendMigrations.map((m, i) => (i === 0 ? { name: m.name, class: RewrittenCreateEntries } : m));
    await mesh.restartBackend(rewritten);
    try {
      const error = await failure(backups.restoreBackup({ backupId: backup.backupId, targetTenantId: mesh.uniqueTenantId("rewritten") }));
      expect(error.code).toBe(Code.FailedPrecondition);
      expect(error.rawMessage).toMatch(/table backend\.entries has columns/);
    } finally {
      await mesh.restartBackend(backendMigrations);
    }
  });
});
