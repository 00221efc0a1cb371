import { ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";
import { createHash, randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { buffer } from "node:stream/consumers";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startS3Server, type S3Server } from "../../testing/s3-server.ts";
import { S3BackupStorage, type S3BackupStorageOptions } from "./s3-backup-storage.ts";

let server: S3Server;
let bucket: S3Client;
const stores: S3BackupStorage[] = [];

beforeAll(async () => {
  server = await startS3Server();
  bucket = new S3Client({ endpoint: server.endpoint, region: "us-east-1", forcePathStyle: true, credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey } });
});
afterAll(async () => {
  stores.forEach((s) => s.close());
  bucket?.destroy();
  await server?.stop();
});

const mib = 1024 ** 2;
let prefixes = 0;

/** A store on the test server, under a prefix of its own. */
function storage(options: Partial<S3BackupStorageOptions> = {}): S3BackupStorage {
  const store = new S3BackupStorage({
    endpoint: server.endpoint,
    region: "us-east-1",
    forcePathStyle: true,
    bucket: server.bucket,
    credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
    prefix: `spec-${++prefixes}`,
    ...options,
  });
  stores.push(store);
  return store;
}

/** Every key in the bucket under `prefix`, as the server lists them. */
async function keysUnder(prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page = await bucket.send(new ListObjectsV2Command({ Bucket: server.bucket, Prefix: prefix, ...(token === undefined ? {} : { ContinuationToken: token }) }));
    keys.push(...(page.Contents ?? []).map((o) => o.Key!));
    token = page.NextContinuationToken;
  } while (token !== undefined);
  return keys.sort();
}

const key = { tenantId: "acme", backupId: "0b9c8d2e-6f3a-4c1b-9a7e-2d5f8e1c3b4a" };
const otherBackup = "5e0a3c1d-7b2f-4d6e-8a9c-1f3b5d7e9a0c";
const text = (s: string) => Readable.from([Buffer.from(s)]);
const sha256 = (data: Buffer) => createHash("sha256").update(data).digest("hex");

describe("S3 backup storage", () => {
  it("shows a backup only once published, whole", async () => {
    const store = storage();
    expect(await store.put(key, "table-0001.copy.gz", text("rows"))).toBe(4);
    expect(await store.put(key, "manifest.json", text("{}"))).toBe(2);
    expect(await store.list("acme")).toEqual([]);
    await expect(store.get(key, "table-0001.copy.gz")).rejects.toMatchObject({ code: "ENOENT" });

    await store.publish(key);
    expect(await store.list("acme")).toEqual([key.backupId]);
    expect((await buffer(await store.get(key, "table-0001.copy.gz"))).toString()).toBe("rows");
    await expect(store.get(key, "table-0002.copy.gz")).rejects.toMatchObject({ code: "ENOENT" });
    expect(await store.list("other")).toEqual([]);
  });

  it("keeps a backup's files under <prefix>/<tenant>/<backup id>/ and its marker beside them", async () => {
    const store = storage({ prefix: "/tenantry/backups/" });
    await store.put(key, "manifest.json", text("{}"));
    await store.publish(key);
    expect(await keysUnder("tenantry/")).toEqual([`tenantry/backups/acme/.published/${key.backupId}`, `tenantry/backups/acme/${key.backupId}/manifest.json`]);
    expect(store.description).toBe(`s3://${server.bucket}/tenantry/backups at ${server.endpoint}`);
  });

  it("uploads a file larger than a part in parts, and reads it back byte for byte", async () => {
    const store = storage({ partSize: 5 * mib });
    const data = randomBytes(11 * mib);
    // In the uneven chunks a compressing, encrypting pipeline gives.
    const chunks = Array.from({ length: Math.ceil(data.length / 65_521) }, (_, i) => data.subarray(i * 65_521, (i + 1) * 65_521));
    expect(await store.put(key, "table-0001.copy.gz", Readable.from(chunks))).toBe(data.length);
    await store.publish(key);
    expect(sha256(await buffer(await store.get(key, "table-0001.copy.gz")))).toBe(sha256(data));
    // Three parts (5 + 5 + 1 MiB) went to the server, each a request of its own.
    const parts = new Set([...server.output().matchAll(/\/table-0001\.copy\.gz\?partNumber=(\d+)&uploadId=\w+&x-id=UploadPart 200/g)].map((m) => m[1]));
    expect([...parts].sort()).toEqual(["1", "2", "3"]);
  });

  it("leaves no object of a file whose stream fails, and rejects with the stream's error", async () => {
    const store = storage({ partSize: 5 * mib });
    const failing = Readable.from(
      (async function* () {
        yield randomBytes(6 * mib);
        throw new Error("the COPY stream broke");
      })(),
    );
    const error = await store.put(key, "table-0001.copy.gz", failing).then(
      () => expect.fail("a failed stream should fail the put"),
      (e: Error) => e,
    );
    expect(error.message).toMatch(/^the COPY stream broke/);
    expect(await keysUnder(`spec-${prefixes}/`)).toEqual([]);
    // The upload is aborted; s3rver cannot abort one (405), so the error also says its parts were left.
    expect(server.output()).toMatch(/table-0001\.copy\.gz\?uploadId=\w+&x-id=AbortMultipartUpload 405/);
    expect(error.message).toMatch(/could not be removed: The specified method is not allowed/);
  });

  it("deletes a backup whether published or not, every page of its files", async () => {
    const store = storage({ pageSize: 2 });
    const files = ["manifest.json", "table-0001.copy.gz", "table-0002.copy.gz", "table-0003.copy.gz", "table-0004.copy.gz"];
    for (const file of files) {
      await store.put(key, file, text(file));
    }
    await store.delete(key);
    expect(await keysUnder(`spec-${prefixes}/`)).toEqual([]);
    await expect(store.publish(key)).rejects.toMatchObject({ code: "ENOENT" });

    for (const file of files) {
      await store.put(key, file, text(file));
    }
    await store.put({ ...key, backupId: otherBackup }, "manifest.json", text("{}"));
    await store.publish(key);
    await store.publish({ ...key, backupId: otherBackup });
    await store.delete(key);
    expect(await store.list("acme")).toEqual([otherBackup]);
    expect(await keysUnder(`spec-${prefixes}/`)).toEqual([`spec-${prefixes}/acme/.published/${otherBackup}`, `spec-${prefixes}/acme/${otherBackup}/manifest.json`]);
    await store.delete(key);
  });

  it("lists every page of a tenant's published backups", async () => {
    const store = storage({ pageSize: 2 });
    const ids = Array.from({ length: 5 }, (_, i) => `${i}b9c8d2e-6f3a-4c1b-9a7e-2d5f8e1c3b4a`);
    for (const backupId of ids) {
      await store.put({ ...key, backupId }, "manifest.json", text("{}"));
      await store.publish({ ...key, backupId });
    }
    expect((await store.list("acme")).sort()).toEqual(ids);
  });

  it("sends the access key it is given", async () => {
    // s3rver checks the key's id (not yet SigV4 signatures themselves).
    const store = storage({ credentials: { accessKeyId: "NOT-A-KEY", secretAccessKey: server.secretAccessKey } });
    await expect(store.put(key, "manifest.json", text("{}"))).rejects.toMatchObject({ name: "InvalidAccessKeyId" });
  });

  it("takes only names Tenantry makes, so that none leaves its backup", async () => {
    const store = storage();
    await expect(store.put({ ...key, tenantId: "../x" }, "a", Readable.from([]))).rejects.toThrow(/not a tenant id/);
    await expect(store.put({ ...key, backupId: ".." }, "a", Readable.from([]))).rejects.toThrow(/not a backup id/);
    await expect(store.put(key, "../../etc", Readable.from([]))).rejects.toThrow(/not a backup file name/);
    await expect(store.get(key, ".published")).rejects.toThrow(/not a backup file name/);
    await expect(store.list("../acme")).rejects.toThrow(/not a tenant id/);
  });
});
