import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { buffer } from "node:stream/consumers";
import { afterAll, describe, expect, it } from "vitest";
import { LocalBackupStorage } from "./local-backup-storage.ts";

const dirs: string[] = [];
afterAll(() => Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true }))));

async function storage(): Promise<LocalBackupStorage> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "tenantry-backups-"));
  dirs.push(dir);
  return new LocalBackupStorage(dir);
}

const key = { tenantId: "acme", backupId: "0b9c8d2e-6f3a-4c1b-9a7e-2d5f8e1c3b4a" };

describe("local backup storage", () => {
  it("shows a backup only once published, whole", async () => {
    const store = await storage();
    expect(await store.put(key, "table-0001.copy.gz", Readable.from([Buffer.from("rows")]))).toBe(4);
    expect(await store.list("acme")).toEqual([]);
    await expect(store.get(key, "table-0001.copy.gz")).rejects.toMatchObject({ code: "ENOENT" });
    await store.publish(key);
    expect(await store.list("acme")).toEqual([key.backupId]);
    expect((await buffer(await store.get(key, "table-0001.copy.gz"))).toString()).toBe("rows");
  });

  it("deletes a backup whether published or not", async () => {
    const store = await storage();
    await store.put(key, "manifest.json", Readable.from([Buffer.from("{}")]));
    await store.delete(key);
    await store.publish(key).then(
      () => expect.fail("nothing should be left to publish"),
      (error: NodeJS.ErrnoException) => expect(error.code).toBe("ENOENT"),
    );
    await store.put(key, "manifest.json", Readable.from([Buffer.from("{}")]));
    await store.publish(key);
    await store.delete(key);
    expect(await store.list("acme")).toEqual([]);
  });

  it("takes only names Tenantry makes, so that none leaves its folder", async () => {
    const store = await storage();
    await expect(store.put({ ...key, tenantId: "../x" }, "a", Readable.from([]))).rejects.toThrow(/not a tenant id/);
    await expect(store.put({ ...key, backupId: ".." }, "a", Readable.from([]))).rejects.toThrow(/not a backup id/);
    await expect(store.put(key, "../../etc", Readable.from([]))).rejects.toThrow(/not a backup file name/);
  });
});
