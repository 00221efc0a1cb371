import { DeleteObjectCommand, ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";
import { Code, type Client } from "@connectrpc/connect";
import { existsSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BackupService, BackupState, RestoreKind, RestoreState, VerifyResult } from "../../../gen/tenantry/platform/v1/backup_service_pb.js";
import { ConfigError, operatorCredentialInterceptor, tenantIdHeader } from "../../mesh/index.ts";
import { failure } from "../../testing/failure.ts";
import { startS3Server, type S3Server } from "../../testing/s3-server.ts";
import { tableDigests } from "../../testing/table-digests.ts";
import { startTestMesh, type TestMesh } from "../../testing/test-mesh.ts";

const schemas = ["auth", "backend"];
const owner = { email: "owner@example.com", password: "correct horse battery" };
const prefix = "tenantry/backups";

let server: S3Server;
let bucket: S3Client;
let mesh: TestMesh;
let backups: Client<typeof BackupService>;
let s3Env: Record<string, string>;
beforeAll(async () => {
  server = await startS3Server();
  bucket = new S3Client({ endpoint: server.endpoint, region: "us-east-1", forcePathStyle: true, credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey } });
  s3Env = {
    TENANTRY_BACKUP_S3_BUCKET: server.bucket,
    TENANTRY_BACKUP_S3_REGION: "us-east-1",
    TENANTRY_BACKUP_S3_ENDPOINT: server.endpoint,
    TENANTRY_BACKUP_S3_FORCE_PATH_STYLE: "true",
    TENANTRY_BACKUP_S3_ACCESS_KEY_ID: server.accessKeyId,
    TENANTRY_BACKUP_S3_SECRET_ACCESS_KEY: server.secretAccessKey,
    TENANTRY_BACKUP_S3_PREFIX: prefix,
  };
  mesh = await startTestMesh({ services: ["auth", "backend"], platformEnv: s3Env });
  backups = mesh.client("platform", BackupService, [operatorCredentialInterceptor(mesh.operatorToken)]);
});
afterAll(async () => {
  await mesh?.stop();
  bucket?.destroy();
  await server?.stop();
});

const headers = (tenantId: string) => ({ headers: { [tenantIdHeader]: tenantId } });

/** Every key in the bucket under `under`, as the server lists them. */
async function keysUnder(under: string): Promise<string[]> {
  const { Contents = [], IsTruncated } = await bucket.send(new ListObjectsV2Command({ Bucket: server.bucket, Prefix: under }));
  expect(IsTruncated).toBe(false);
  return Contents.map((o) => o.Key!).sort();
}

async function databaseOf(tenantId: string): Promise<string> {
  return (await mesh.platformClient.getTenant({ tenantId })).tenant!.database;
}

describe("backups in S3", () => {
  it("take a tenant's backup into the bucket, verify it, restore it in place to equal digests and clone from it", async () => {
    const { tenantId } = await mesh.createTenant({ owner });
    for (const title of ["one", "two", "three"]) {
      await mesh.entries.createEntry({ title, tags: ["s3"] }, headers(tenantId));
    }
    const before = await tableDigests(mesh.databaseUrl(await databaseOf(tenantId)), schemas);

    let started = performance.now();
    const { backup } = await backups.createBackup({ tenantId, label: "to S3" });
    console.info(`backup of a small tenant to S3 (s3rver): ${(performance.now() - started).toFixed(0)} ms, ${backup!.sizeBytes} bytes`);
    expect(backup).toMatchObject({ tenantId, state: BackupState.SUCCEEDED, failureReason: "" });
    const id = backup!.backupId;
    const files = ["manifest.json", ...Array.from({ length: backup!.tables.length }, (_, i) => `table-${String(i + 1).padStart(4, "0")}.copy.zst`)];
    expect(await keysUnder(`${prefix}/${tenantId}/`)).toEqual([`${prefix}/${tenantId}/.published/${id}`, ...files.map((f) => `${prefix}/${tenantId}/${id}/${f}`)].sort());
    // Nothing went to the data directory.
    expect(existsSync(path.join(mesh.sharedEnv.TENANTRY_DATA_DIR!, "backups"))).toBe(false);

    const { backup: verified } = await backups.verifyBackup({ backupId: id });
    expect(verified).toMatchObject({ verifyResult: VerifyResult.PASSED, verifyError: "" });

    await mesh.entries.createEntry({ title: "after the backup" }, headers(tenantId));
    started = performance.now();
    const { restore: inPlace, tenant: restored } = await backups.restoreBackup({ backupId: id });
    console.info(`in-place restore from S3 (s3rver): ${(performance.now() - started).toFixed(0)} ms`);
    expect(inPlace).toMatchObject({ kind: RestoreKind.IN_PLACE, state: RestoreState.SUCCEEDED, tenantId });
    expect(await tableDigests(mesh.databaseUrl(restored!.database), schemas)).toEqual(before);

    const cloneId = mesh.uniqueTenantId("s3-clone");
    const { restore: clone } = await backups.restoreBackup({ backupId: id, targetTenantId: cloneId });
    expect(clone).toMatchObject({ kind: RestoreKind.CLONE, state: RestoreState.SUCCEEDED, tenantId: cloneId });
    expect(await mesh.login(cloneId, owner)).toMatch(/^ey/);
    const { entries } = await mesh.entries.listEntries({ pageSize: 10 }, headers(cloneId));
    expect(entries.map((e) => e.title).sort()).toEqual(["one", "three", "two"]);

    await backups.deleteBackup({ backupId: id });
    expect(await keysUnder(`${prefix}/${tenantId}/`)).toEqual([]);
    expect((await failure(backups.getBackup({ backupId: id }))).code).toBe(Code.NotFound);
  });

  it("refuse to restore a backup whose file has gone from the bucket, and leave no clone", async () => {
    const { tenantId } = await mesh.createTenant({ owner });
    await mesh.entries.createEntry({ title: "soon missing" }, headers(tenantId));
    const { backup } = await backups.createBackup({ tenantId });
    await bucket.send(new DeleteObjectCommand({ Bucket: server.bucket, Key: `${prefix}/${tenantId}/${backup!.backupId}/table-0001.copy.zst` }));

    const cloneId = mesh.uniqueTenantId("s3-clone");
    const refused = await failure(backups.restoreBackup({ backupId: backup!.backupId, targetTenantId: cloneId }));
    expect(refused.code).toBe(Code.FailedPrecondition);
    expect(refused.rawMessage).toMatch(/missing from storage/);
    expect((await failure(mesh.platformClient.getTenant({ tenantId: cloneId }))).code).toBe(Code.NotFound);
    expect(await mesh.sql("postgres", "select 1 from pg_database where datname = $1", [`tenant_${cloneId.replaceAll("-", "_")}`])).toEqual([]);
  });

  it("stop Platform at start on settings that do not go together", async () => {
    // Empty is unset: a bucket without its region.
    const refused = await mesh.restartPlatform({ TENANTRY_BACKUP_S3_REGION: "" }).then(
      () => expect.fail("Platform should not start with a bucket but no region"),
      (error: unknown) => error,
    );
    expect(refused).toBeInstanceOf(ConfigError);
    expect((refused as Error).message).toMatch(/^TENANTRY_BACKUP_S3_REGION: required with TENANTRY_BACKUP_S3_BUCKET/);
  });
});
