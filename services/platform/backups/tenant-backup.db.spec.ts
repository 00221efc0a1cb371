import { randomBytes, randomUUID } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TestServer } from "../../testing/test-server.ts";
import { LocalBackupStorage } from "./local-backup-storage.ts";
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
  await server.sql(database, "analyze");
});

afterAll(async () => {
  await server.sql("postgres", `drop database if exists ${database} with (force)`);
  await server.sql("postgres", `drop role if exists ${role}`);
  await server.close();
  await rm(dir, { recursive: true, force: true });
});

/** Local storage that keeps every put's promise, so that a test can wait for the puts it started. */
class WatchedStorage extends LocalBackupStorage {
  readonly puts: Promise<unknown>[] = [];

  override put(...args: Parameters<LocalBackupStorage["put"]>): Promise<number> {
    const put = super.put(...args);
    this.puts.push(put.catch(() => undefined));
    return put;
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
    cleanedUp = true;
    await afterHold;
    // A worker still going would start on the next table as soon as it resumed: wait for what it stored.
    await new Promise((resolve) => setImmediate(resolve));
    await Promise.all(storage.puts);
    expect(await filesUnder(dir)).toEqual([]);
  });

  it("reads its tables on threads of lower priority than the process's where the system has them (Linux)", async () => {
    const storage = new LocalBackupStorage(dir);
    const key = { tenantId: "threads", backupId: randomUUID() };
    let niced: number[] = [];
    const nice = (stat: string) => Number(stat.split(") ")[1]!.split(" ")[16]);
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
          niced = readdirSync("/proc/self/task").map((tid) => nice(readFileSync(`/proc/self/task/${tid}/stat`, "utf8")));
        }
      },
    });
    expect(manifest.tables.map((t) => [t.name, t.rows]).toSorted()).toEqual([["mikro_orm_migrations", 0], ["readable", 500]]);
    if (existsSync("/proc/thread-self")) {
      expect(niced.filter((n) => n === 19).length).toBe(1);
      expect(nice(readFileSync("/proc/self/stat", "utf8"))).toBe(0);
    }
    await storage.delete(key);
  });
});
