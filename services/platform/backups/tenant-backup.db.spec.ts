import { execFileSync } from "node:child_process";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { existsSync, readdirSync, readFileSync, readlinkSync, statSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Code } from "@connectrpc/connect";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { failure } from "../../testing/failure.ts";
import { TestServer } from "../../testing/test-server.ts";
import { untar } from "../../testing/untar.ts";
import { LocalBackupStorage } from "./local-backup-storage.ts";
import { downloadBackup } from "./backup-download.ts";
import { loadBackup } from "./backup-load.ts";
import { compressionOf } from "./backup-manifest.ts";
import { BackupPace } from "./backup-pace.ts";
import { TableReader } from "./table-reader.ts";
import { takeBackup } from "./tenant-backup.ts";
import { sameNames } from "./tenant-catalog.ts";

const server = new TestServer();
const database = `backup_workers_${randomBytes(4).toString("hex")}`;
const role = database;
const password = randomBytes(12).toString("hex");
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "tenantry-backup-workers-"));
  await server.sql("postgres", `create role ${role} login password '${password}'`);
  await server.sql("postgres", `create database ${database} owner ${role}`);
  // Tables of decreasing size, the third one the role may not read: the
  // queue hands out the largest first, so one worker is past the first
  // table and the other meets the unreadable one while two are still queued.
  await server.sql(database, `create schema alpha authorization ${role}`);
  await server.sql(database, `begin; set local role ${role}; create table alpha.mikro_orm_migrations (id serial primary key, name text); insert into alpha.mikro_orm_migrations (name) values ('0001-first'); commit`);
  for (const [table, rows] of [["a_first", 300], ["b_second", 200], ["d_fourth", 10], ["e_fifth", 5]] as const) {
    await server.sql(database, `begin; set local role ${role}; create table alpha.${table} as select g as id, repeat('x', 1000) as body from generate_series(1, ${rows}) g; commit`);
  }
  await server.sql(database, "create table alpha.c_unreadable as select g as id, repeat('x', 1000) as body from generate_series(1, 100) g");
  await server.sql(database, `create schema beta authorization ${role}`);
  await server.sql(database, `begin; set local role ${role}; create table beta.mikro_orm_migrations (id serial primary key, name text); create table beta.readable as select g as id, repeat('y', 1000) as body from generate_series(1, 500) g; commit`);
  // More than a compressed block's worth (1 MiB) of rows: files of several gzip members or zstd frames.
  await server.sql(database, `create schema gamma authorization ${role}`);
  await server.sql(database, `begin; set local role ${role}; create table gamma.mikro_orm_migrations (id serial primary key, name text); create table gamma.rows (id int primary key, body text); insert into gamma.rows select g, repeat(md5(g::text), 1 + g % 40) from generate_series(1, 6000) g; commit`);
  await server.sql(database, "analyze");
});

afterAll(async () => {
  await server.sql("postgres", `drop database if exists ${database} with (force)`);
  await server.sql("postgres", `drop role if exists ${role}`);
  await server.close();
  await rm(dir, { recursive: true, force: true });
});

/**
 * Local storage that keeps every put's promise, so that a test can wait for
 * the puts it started, and counts the files handed out to be written
 * directly (by a reading thread) once `closed` is set.
 */
class WatchedStorage extends LocalBackupStorage {
  readonly puts: Promise<unknown>[] = [];
  closed = false;
  stagedAfterClosing = 0;

  override put(...args: Parameters<LocalBackupStorage["put"]>): Promise<number> {
    const put = super.put(...args);
    this.puts.push(put.catch(() => undefined));
    return put;
  }

  override stagedPath(...args: Parameters<LocalBackupStorage["stagedPath"]>): Promise<string> {
    if (this.closed) {
      this.stagedAfterClosing++;
    }
    return super.stagedPath(...args);
  }
}

/** How the backups connect: as the tenant's role. */
const connection = {
  get config(): pg.ClientConfig {
    const url = new URL(server.databaseUrl(database));
    Object.assign(url, { username: role, password });
    return { connectionString: url.toString() };
  },
  sessionRole: "",
};

/** Every file below a folder. */
async function filesUnder(folder: string): Promise<string[]> {
  const entries = await readdir(folder, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((e) => e.isFile()).map((e) => path.relative(folder, path.join(e.parentPath, e.name)));
}

describe("taking a backup", () => {
  it("that fails on one table answers only once every worker has stopped: nothing is stored after the caller cleans up", async () => {
    const storage = new WatchedStorage(dir);
    const key = { tenantId: "workers", backupId: randomUUID() };
    let cleanedUp = false;
    let held = false;
    let resumed: () => void = () => {};
    const afterHold = new Promise<void>((resolve) => (resumed = resolve));
    const taking = takeBackup({
      key,
      placement: { cluster: "default", database },
      connection,
      schemas: ["alpha"],
      names: sameNames,
      storage,
      dataKey: { key: randomBytes(32), sealed: Buffer.alloc(0) },
      workers: 2,
      maxBytesPerSecond: 0,
      progress: async ({ tables }) => {
        // The first worker to finish a table waits there until the caller has
        // cleaned up after the failure (or a while, when the backup waits for it).
        if (tables.length === 1 && !held) {
          held = true;
          const until = Date.now() + 3000;
          while (!cleanedUp && Date.now() < until) {
            await sleep(10);
          }
          resumed();
        }
      },
    });
    const failure = await taking.then(
      () => undefined,
      (error: unknown) => error as Error,
    );
    expect(failure?.message).toMatch(/permission denied for table c_unreadable/);
    // What the caller of a failed backup does: remove whatever it stored.
    await storage.delete(key);
    storage.closed = true;
    cleanedUp = true;
    await afterHold;
    // A worker still going would start on the next table as soon as it resumed: wait for what it stored.
    await new Promise((resolve) => setImmediate(resolve));
    await Promise.all(storage.puts);
    await sleep(100);
    expect(storage.stagedAfterClosing).toBe(0);
    expect(await filesUnder(dir)).toEqual([]);
  });

  it("stopped in the middle of a table its thread writes, leaves no file descriptor of it open", async () => {
    const storage = new LocalBackupStorage(dir);
    const key = { tenantId: "stopped", backupId: randomUUID() };
    const coordinator = new pg.Client(connection.config);
    await coordinator.connect();
    await coordinator.query("begin isolation level repeatable read read only");
    const snapshot = (await coordinator.query<{ id: string }>("select pg_export_snapshot() as id")).rows[0]!.id;
    const reader = new TableReader();
    const file = await storage.stagedPath(key, "table-0001.copy.zst");
    const openOnFile = () =>
      readdirSync("/proc/self/fd").filter((fd) => {
        try {
          return readlinkSync(`/proc/self/fd/${fd}`).startsWith(file);
        } catch {
          return false; // closed meanwhile
        }
      }).length;
    try {
      await reader.open(connection, snapshot);
      // At 20 KB a second the table's 300 KB take some 15 s: the thread is in the middle when stopped.
      const reading = reader.readToFile({ sql: "copy alpha.a_first to stdout (format binary)", compression: "zstd", key: randomBytes(32), context: "stopped", pace: new BackupPace(20_000).shared }, file);
      const failed = reading.then(
        () => undefined,
        (error: Error) => error,
      );
      while (openOnFile() === 0) {
        await sleep(20);
      }
      // Its first frame (1 MiB) is not out yet: the thread is reading, its file open.
      await sleep(300);
      expect([openOnFile(), statSync(file).size]).toEqual([1, 0]);
      await reader.abort();
      expect((await failed)?.message).toMatch(/the backup stopped/);
      expect(openOnFile()).toBe(0);
    } finally {
      await reader.abort();
      await coordinator.end();
      await storage.delete(key);
    }
  });

  it("reads its tables on threads of lower priority than the process's (niced, SCHED_IDLE) where the system has them (Linux)", async () => {
    const storage = new LocalBackupStorage(dir);
    const key = { tenantId: "threads", backupId: randomUUID() };
    let niced: { nice: number; policy: number }[] = [];
    // Fields 19 (nice) and 41 (policy) of proc(5)'s stat, counted from field 3, after the command's ") ".
    const fields = (stat: string) => stat.split(") ")[1]!.split(" ");
    const nice = (stat: string) => Number(fields(stat)[16]);
    const policy = (stat: string) => Number(fields(stat)[38]);
    const manifest = await takeBackup({
      key,
      placement: { cluster: "default", database },
      connection,
      schemas: ["beta"],
      names: sameNames,
      storage,
      dataKey: { key: randomBytes(32), sealed: Buffer.alloc(0) },
      workers: 1,
      maxBytesPerSecond: 0,
      progress: async ({ tables }) => {
        // Called with the first table stored, its reader still open for the next.
        if (tables.length === 1 && existsSync("/proc/thread-self")) {
          niced = readdirSync("/proc/self/task").map((tid) => {
            const stat = readFileSync(`/proc/self/task/${tid}/stat`, "utf8");
            return { nice: nice(stat), policy: policy(stat) };
          });
        }
      },
    });
    expect(manifest.tables.map((t) => [t.name, t.rows]).toSorted()).toEqual([["mikro_orm_migrations", 0], ["readable", 500]]);
    // The threads wrote the files themselves, as storage's own would: the owner's only, of the sizes recorded.
    const files = await filesUnder(dir);
    for (const table of manifest.tables) {
      const file = statSync(path.join(dir, files.find((f) => f.endsWith(table.file))!));
      expect([file.mode & 0o777, file.size]).toEqual([0o600, table.storedBytes]);
    }
    if (existsSync("/proc/thread-self")) {
      // SCHED_IDLE (5) as well where chrt is installed, as on this project's CI; the process keeps SCHED_OTHER (0).
      const idlePolicy = existsSync("/usr/bin/chrt") ? 5 : 0;
      expect(niced.filter((n) => n.nice === 19)).toEqual([{ nice: 19, policy: idlePolicy }]);
      expect([nice(readFileSync("/proc/self/stat", "utf8")), policy(readFileSync("/proc/self/stat", "utf8"))]).toEqual([0, 0]);
    }
    await storage.delete(key);
  });
});

describe("a backup's compression", () => {
  for (const [compression, format, ending, tool] of [
    ["zstd", "tenantry-backup/1.1", ".copy.zst", "zstd"],
    // What Platforms wrote before format 1.1: such backups restore, verify and download as they always did.
    ["gzip", "tenantry-backup/1", ".copy.gz", "gzip"],
  ] as const) {
    it(`${compression} (format ${format}): its tables load back, on this thread and on a loader's, and download as files ${tool} -dc reads`, async () => {
      const storage = new LocalBackupStorage(dir);
      const key = { tenantId: `compression-${compression}`, backupId: randomUUID() };
      const dataKey = { key: randomBytes(32), sealed: Buffer.alloc(0) };
      const manifest = await takeBackup({
        key,
        placement: { cluster: "default", database },
        connection,
        schemas: ["gamma"],
        names: sameNames,
        storage,
        dataKey,
        workers: 1,
        maxBytesPerSecond: 0,
        ...(compression === "gzip" ? { compression } : {}),
        progress: async () => {},
      });
      expect(manifest.format).toBe(format);
      expect(compressionOf(manifest)).toBe(compression);
      expect("compression" in manifest).toBe(compression === "zstd");
      expect(manifest.tables.map((t) => t.file).toSorted()).toEqual([`table-0001${ending}`, `table-0002${ending}`]);
      const rows = manifest.tables.find((t) => t.name === "rows")!;
      expect(rows.storedBytes).toBeLessThan(1024 * 1024);

      const client = new pg.Client(connection.config);
      await client.connect();
      try {
        // Loaded again into the tables it was taken from, then read back and compared with the manifest.
        await loadBackup({ client, key, manifest, dataKey, storage, readBack: true });
        await loadBackup({ client, connection, key, manifest, dataKey, storage, readBack: true });

        const files = await untar(downloadBackup({ key, manifest, dataKey, storage }).bytes());
        const script = files.get("restore.sql")!.toString("utf8");
        expect(script).toContain(`from program '${tool} -dc ${rows.file}' with (format binary)`);
        expect(JSON.parse(files.get("manifest.json")!.toString("utf8"))).toMatchObject(
          compression === "zstd" ? { format: "tenantry-download/1.1", compression } : { format: "tenantry-download/1" },
        );
        for (const table of manifest.tables) {
          const data = execFileSync(tool, ["-dc"], { input: files.get(table.file)!, maxBuffer: 1 << 26 });
          expect(createHash("sha256").update(data).digest("hex")).toBe(table.sha256);
          if (table === rows) {
            expect(data.length).toBeGreaterThan(2 * 1024 * 1024);
          }
        }

        // A changed byte fails the load, whichever way the decompression meets it.
        const file = path.join(dir, key.tenantId, key.backupId, rows.file);
        const bytes = await readFile(file);
        bytes[Math.floor(bytes.length / 3)]! ^= 0x10;
        await writeFile(file, bytes);
        const error = await failure(loadBackup({ client, connection, key, manifest, dataKey, storage, readBack: false }));
        expect(error.code).toBe(Code.FailedPrecondition);
        expect(error.rawMessage).toMatch(new RegExp(`^file ${rows.file.replace(".", "\\.")} \\(gamma\\.rows\\) of backup ".+" failed its integrity check`));
      } finally {
        await client.query("drop schema if exists tenantry_restore cascade").catch(() => undefined);
        await client.end();
        await storage.delete(key);
      }
    });
  }
});
