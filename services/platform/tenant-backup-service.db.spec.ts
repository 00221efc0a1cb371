import { Code, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { open, rm } from "node:fs/promises";
import path from "node:path";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { from as copyFrom } from "pg-copy-streams";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UserService } from "../../gen/tenantry/auth/v1/user_service_pb.js";
import { BackupService, BackupState, RestoreState } from "../../gen/tenantry/platform/v1/backup_service_pb.js";
import { TenantBackupService, type DownloadBackupResponse } from "../../gen/tenantry/selfserve/v1/tenant_backup_service_pb.js";
import { operatorCredentialInterceptor, tenantIdHeader } from "../mesh/index.ts";
import { failure } from "../testing/failure.ts";
import { tableDigests } from "../testing/table-digests.ts";
import { untar } from "../testing/untar.ts";
import { startTestMesh, type TestMesh } from "../testing/test-mesh.ts";
import type { DownloadManifest } from "./backups/index.ts";

const schemas = ["auth", "backend"];
const password = "correct horse battery";
/** Per tenant and hour, in this mesh: small, so that the limits are reached. */
const perHour = 2;

let mesh: TestMesh;
let selfServe: Client<typeof TenantBackupService>;
beforeAll(async () => {
  mesh = await startTestMesh({
    services: ["auth", "backend"],
    platformEnv: {
      TENANTRY_TENANT_BACKUPS_PER_HOUR: String(perHour),
      TENANTRY_TENANT_RESTORES_PER_HOUR: String(perHour),
      TENANTRY_TENANT_DOWNLOADS_PER_HOUR: String(perHour),
    },
    // Routes are trusted for minutes: a switch of database must reach the services through the change feed.
    tenantServiceEnv: { TENANTRY_TENANT_CACHE_TTL_MS: "600000", TENANTRY_TENANT_WATCHED_TTL_MS: "600000" },
  });
  // No token of the tests' own: every call carries a user's, from Login.
  selfServe = mesh.client("platform", TenantBackupService, []);
});
afterAll(() => mesh?.stop());

/** The metadata of a user's call in a tenant. */
const as = (tenantId: string, token?: string) => ({ headers: { [tenantIdHeader]: tenantId, ...(token === undefined ? {} : { authorization: `Bearer ${token}` }) } });

/** A tenant with its owner, an admin and a member, each logged in, and a few entries. */
async function tenantWithUsers(titles: string[] = ["one", "two"]) {
  const owner = { email: "owner@example.com", password };
  const { tenantId } = await mesh.createTenant({ owner });
  const ownerToken = await mesh.login(tenantId, owner);
  const users = mesh.client("auth", UserService, []);
  const tokens: Record<string, string> = {};
  for (const role of ["admin", "member"]) {
    const user = { email: `${role}@example.com`, password };
    await users.createUser({ ...user, roles: [role] }, as(tenantId, ownerToken));
    tokens[role] = await mesh.login(tenantId, user);
  }
  for (const title of titles) {
    await mesh.entries.createEntry({ title }, as(tenantId));
  }
  return { tenantId, owner: ownerToken, admin: tokens.admin!, member: tokens.member! };
}

async function titles(tenantId: string): Promise<string> {
  const { entries } = await mesh.entries.listEntries({ pageSize: 100 }, as(tenantId));
  return entries.map((e) => e.title).sort().join();
}

async function databaseOf(tenantId: string): Promise<string> {
  return (await mesh.platformClient.getTenant({ tenantId })).tenant!.database;
}

/** Polls until `check` holds (a switch of database reaching the services through the feed). */
async function eventually(check: () => Promise<boolean>, limitMs = 5000): Promise<void> {
  const deadline = Date.now() + limitMs;
  while (!(await check().catch(() => false))) {
    if (Date.now() > deadline) {
      throw new Error(`not within ${limitMs} ms`);
    }
    await sleep(25);
  }
}

/** Reads a download whole: the bytes in order, and the size its first message announced. */
async function download(stream: AsyncIterable<DownloadBackupResponse>): Promise<{ bytes: Buffer; announced: bigint; messages: number }> {
  const parts: Uint8Array[] = [];
  let announced = -1n;
  for await (const message of stream) {
    if (announced === -1n) {
      announced = message.totalBytes;
    } else {
      expect(message.totalBytes).toBe(0n);
    }
    expect(message.chunk.length).toBeLessThanOrEqual(64 * 1024);
    parts.push(message.chunk);
  }
  return { bytes: Buffer.concat(parts), announced, messages: parts.length };
}

/**
 * Runs a download's restore.sql in a database as psql would: its SQL
 * statements as they are, each `\copy … from program 'zstd -dc FILE'` (or
 * `gzip -dc`) as COPY FROM STDIN fed with what that program makes of that
 * file of the archive.
 */
async function runRestoreScript(url: string, files: Map<string, Buffer>): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    for (const line of files.get("restore.sql")!.toString("utf8").split("\n")) {
      const copy = /^\\copy (.+) from program '(zstd|gzip) -dc ([a-z0-9.-]+)' with \(format binary\)$/.exec(line);
      if (copy !== null) {
        const sink = client.query(copyFrom(`copy ${copy[1]} from stdin (format binary)`));
        await pipeline(Readable.from([execFileSync(copy[2]!, ["-dc"], { input: files.get(copy[3]!)!, maxBuffer: 1 << 28 })]), sink);
      } else if (!line.startsWith("--") && !line.startsWith("\\set") && line.trim() !== "") {
        await client.query(line);
      }
    }
  } finally {
    await client.end();
  }
}

describe("tenants' own backups", () => {
  it("are taken, listed, read and restored in place (and undone) by the tenant's admin, and audited as theirs", async () => {
    const { tenantId, admin } = await tenantWithUsers(["one", "two"]);
    const before = await tableDigests(mesh.databaseUrl(await databaseOf(tenantId)), schemas);
    const { backup } = await selfServe.createBackup({ label: "before the import" }, as(tenantId, admin));
    expect(backup).toMatchObject({ label: "before the import", state: BackupState.SUCCEEDED, failureReason: "" });
    expect(backup!.tables.map((t) => t.name).sort()).toEqual(Object.keys(before).sort());
    expect(backup!.tables.find((t) => t.name === "backend.entries")?.rows).toBe(2n);
    // The operators see the same backup, with where it was read from, which tenants are not shown.
    const { backup: operatorView } = await mesh.client("platform", BackupService, [operatorCredentialInterceptor(mesh.operatorToken)]).getBackup({ backupId: backup!.backupId });
    expect(operatorView).toMatchObject({ tenantId, backupId: backup!.backupId, database: await databaseOf(tenantId) });
    expect(Object.keys(backup!)).not.toContain("database");

    expect((await selfServe.getBackup({ backupId: backup!.backupId }, as(tenantId, admin))).backup).toEqual(backup);
    const { backups } = await selfServe.listBackups({}, as(tenantId, admin));
    expect(backups.map((b) => b.backupId)).toEqual([backup!.backupId]);

    await mesh.entries.createEntry({ title: "after the backup" }, as(tenantId));
    const { restore } = await selfServe.restoreBackup({ backupId: backup!.backupId }, as(tenantId, admin));
    expect(restore).toMatchObject({ backupId: backup!.backupId, state: RestoreState.SUCCEEDED });
    expect(restore!.undoDeadline!.seconds).toBeGreaterThan(BigInt(Math.floor(Date.now() / 1000)));
    expect(await tableDigests(mesh.databaseUrl(await databaseOf(tenantId)), schemas)).toEqual(before);
    await eventually(async () => (await titles(tenantId)) === "one,two");

    // The admin's token still holds: the restored tenant has the same keys and users.
    const { restore: undone } = await selfServe.undoRestore({}, as(tenantId, admin));
    expect(undone).toMatchObject({ restoreId: restore!.restoreId, state: RestoreState.UNDONE });
    await eventually(async () => (await titles(tenantId)) === "after the backup,one,two");

    const { events } = await mesh.platformClient.listAuditEvents({ tenantId });
    const own = events.filter((e) => e.actor.startsWith("user:")).map((e) => e.action);
    expect(own).toEqual(expect.arrayContaining(["CreateBackup", "GetBackup", "ListBackups", "RestoreBackup", "UndoRestore"]));
  });

  it("are refused to a user without backups.manage, to a call without a user's token, and to the operator", async () => {
    const { tenantId, owner, member } = await tenantWithUsers();
    const { backup } = await selfServe.createBackup({}, as(tenantId, owner));
    for (const call of [
      () => selfServe.createBackup({}, as(tenantId, member)),
      () => selfServe.listBackups({}, as(tenantId, member)),
      () => selfServe.getBackup({ backupId: backup!.backupId }, as(tenantId, member)),
      () => selfServe.restoreBackup({ backupId: backup!.backupId }, as(tenantId, member)),
      () => selfServe.undoRestore({}, as(tenantId, member)),
      () => download(selfServe.downloadBackup({ backupId: backup!.backupId }, as(tenantId, member))),
    ]) {
      const error = await failure(call());
      expect(error.code).toBe(Code.PermissionDenied);
      expect(error.rawMessage).toMatch(/needs permission "backups.manage"/);
    }
    expect((await failure(selfServe.listBackups({}, as(tenantId)))).code).toBe(Code.Unauthenticated);
    expect((await failure(selfServe.listBackups({}, as(tenantId, mesh.operatorToken)))).code).toBe(Code.PermissionDenied);
    // The member's calls changed nothing.
    expect((await selfServe.listBackups({}, as(tenantId, owner))).backups).toHaveLength(1);
  });

  it("of another tenant are NOT_FOUND, exactly as unknown ones, and never listed", async () => {
    const a = await tenantWithUsers(["a"]);
    const b = await tenantWithUsers(["b"]);
    const { backup: ofB } = await selfServe.createBackup({}, as(b.tenantId, b.admin));
    const unknown = "00000000-0000-4000-8000-000000000000";
    for (const backupId of [ofB!.backupId, unknown]) {
      for (const call of [
        () => selfServe.getBackup({ backupId }, as(a.tenantId, a.admin)),
        () => selfServe.restoreBackup({ backupId }, as(a.tenantId, a.admin)),
        () => download(selfServe.downloadBackup({ backupId }, as(a.tenantId, a.admin))),
      ]) {
        const error = await failure(call());
        expect(error.code).toBe(Code.NotFound);
        expect(error.rawMessage).toBe(`backup "${backupId}" not found`);
      }
    }
    expect((await selfServe.listBackups({}, as(a.tenantId, a.admin))).backups).toEqual([]);
    // A's token naming B is refused before anything of B is looked at.
    expect((await failure(selfServe.getBackup({ backupId: ofB!.backupId }, as(b.tenantId, a.admin)))).code).toBe(Code.PermissionDenied);
    // B is untouched: A's attempt to restore B's backup restored nothing.
    expect(await titles(b.tenantId)).toBe("b");
    const restores = await mesh.sql(mesh.platformDatabase, "select 1 from platform.restores where backup_id = $1", [ofB!.backupId]);
    expect(restores).toEqual([]);
  });

  it("download over gRPC and Connect as a tar of plain files whose tables are the tenant's data, loadable with restore.sql", async () => {
    const { tenantId, admin } = await tenantWithUsers(["portable", "data", "here"]);
    const database = await databaseOf(tenantId);
    const before = await tableDigests(mesh.databaseUrl(database), schemas);
    const { backup } = await selfServe.createBackup({}, as(tenantId, admin));
    await mesh.entries.createEntry({ title: "not in the backup" }, as(tenantId));

    const overGrpc = await download(selfServe.downloadBackup({ backupId: backup!.backupId }, as(tenantId, admin)));
    const connect = createClient(TenantBackupService, createConnectTransport({ baseUrl: `http://127.0.0.1:${mesh.platform.httpPort}`, httpVersion: "1.1" }));
    const overConnect = await download(connect.downloadBackup({ backupId: backup!.backupId }, as(tenantId, admin)));
    expect(overConnect.bytes.equals(overGrpc.bytes)).toBe(true);
    expect(overGrpc.announced).toBe(BigInt(overGrpc.bytes.length));
    // 64 KiB a message, the last one less.
    expect(overGrpc.messages).toBe(Math.ceil(overGrpc.bytes.length / (64 * 1024)));

    const files = await untar(overGrpc.bytes);
    const manifest = JSON.parse(files.get("manifest.json")!.toString("utf8")) as DownloadManifest;
    expect(manifest).toMatchObject({ format: "tenantry-download/1.1", tenantId, backupId: backup!.backupId, compression: "zstd" });
    expect(Object.keys(manifest.services).sort()).toEqual(schemas);
    expect([...files.keys()]).toEqual(["manifest.json", "restore.sql", ...manifest.tables.map((t) => t.file)]);
    expect(manifest.tables.every((t) => t.file.endsWith(".copy.zst"))).toBe(true);
    for (const table of manifest.tables) {
      const data = execFileSync("zstd", ["-dc"], { input: files.get(table.file)!, maxBuffer: 1 << 28 });
      // The file holds exactly the COPY stream the backup recorded.
      expect(createHash("sha256").update(data).digest("hex")).toBe(table.sha256);
      expect(backup!.tables.find((t) => t.name === `${table.schema}.${table.name}`)?.sha256).toBe(table.sha256);
    }

    const scratch = `tenantry_download_${tenantId.replaceAll("-", "_")}`;
    await mesh.sql("postgres", `create database ${scratch}`);
    try {
      await runRestoreScript(mesh.databaseUrl(scratch), files);
      expect(await tableDigests(mesh.databaseUrl(scratch), schemas)).toEqual(before);
    } finally {
      await mesh.sql("postgres", `drop database ${scratch}`);
    }
  });

  it("download refuses, mid-stream, a backup whose file was changed or removed", async () => {
    const { tenantId, admin } = await tenantWithUsers(["damaged"]);
    const { backup } = await selfServe.createBackup({}, as(tenantId, admin));
    const dir = path.join(mesh.sharedEnv.TENANTRY_DATA_DIR!, "backups", tenantId, backup!.backupId);
    const file = await open(path.join(dir, "table-0001.copy.zst"), "r+");
    const [byte] = [Buffer.alloc(1)];
    await file.read(byte, 0, 1, 20);
    await file.write(Buffer.from([byte[0]! ^ 0xff]), 0, 1, 20);
    await file.close();
    const damaged = await failure(download(selfServe.downloadBackup({ backupId: backup!.backupId }, as(tenantId, admin))));
    expect(damaged.code).toBe(Code.FailedPrecondition);
    expect(damaged.rawMessage).toMatch(/^file table-0001\.copy\.zst \(.+\) of backup ".+" failed its integrity check/);

    await rm(path.join(dir, "table-0001.copy.zst"));
    const missing = await failure(download(selfServe.downloadBackup({ backupId: backup!.backupId }, as(tenantId, admin))));
    expect(missing.code).toBe(Code.FailedPrecondition);
    expect(missing.rawMessage).toMatch(/^file table-0001\.copy\.zst \(.+\) of backup ".+" is missing from storage$/);
  });

  it("are limited per tenant and hour: past the limit RESOURCE_EXHAUSTED with when to retry; other tenants are not held back", async () => {
    const { tenantId, admin } = await tenantWithUsers(["limited"]);
    // Bodies that do not compress: the download takes several messages.
    for (let i = 0; i < 4; i++) {
      await mesh.entries.createEntry({ title: `large ${i}`, body: randomBytes(48 * 1024).toString("base64") }, as(tenantId));
    }
    const other = await tenantWithUsers(["other"]);
    let backupId = "";
    for (let i = 0; i < perHour; i++) {
      backupId = (await selfServe.createBackup({}, as(tenantId, admin))).backup!.backupId;
    }
    const refused = await failure(selfServe.createBackup({}, as(tenantId, admin)));
    expect(refused.code).toBe(Code.ResourceExhausted);
    expect(refused.rawMessage).toMatch(/all the backups it may take in an hour; retry in (60|59) min$/);
    expect(Number(refused.metadata.get("retry-after"))).toBeGreaterThan(3500);
    expect((await selfServe.listBackups({}, as(tenantId, admin))).backups).toHaveLength(perHour);
    await selfServe.createBackup({}, as(other.tenantId, other.admin));

    // A download given up after its first message counts as one.
    for await (const first of selfServe.downloadBackup({ backupId }, as(tenantId, admin))) {
      expect(first.totalBytes).toBeGreaterThan(2n * 64n * 1024n);
      break;
    }
    for (let i = 1; i < perHour; i++) {
      await download(selfServe.downloadBackup({ backupId }, as(tenantId, admin)));
    }
    expect((await failure(download(selfServe.downloadBackup({ backupId }, as(tenantId, admin))))).code).toBe(Code.ResourceExhausted);

    await selfServe.restoreBackup({ backupId }, as(tenantId, admin));
    await selfServe.undoRestore({}, as(tenantId, admin));
    const noMore = await failure(selfServe.restoreBackup({ backupId }, as(tenantId, admin)));
    expect(noMore.code).toBe(Code.ResourceExhausted);
    expect(noMore.rawMessage).toMatch(/all the restores it may start in an hour/);
  });

  it("count no request refused for what it asked: a bad label, an unknown backup, nothing to undo, a backup of another tenant", async () => {
    const { tenantId, admin } = await tenantWithUsers(["counted"]);
    const other = await tenantWithUsers(["other"]);
    const { backup: ofOther } = await selfServe.createBackup({}, as(other.tenantId, other.admin));
    for (let i = 0; i < perHour + 1; i++) {
      expect((await failure(selfServe.createBackup({ label: "x".repeat(201) }, as(tenantId, admin)))).code).toBe(Code.InvalidArgument);
      expect((await failure(selfServe.createBackup({ label: "a\u0000b" }, as(tenantId, admin)))).code).toBe(Code.InvalidArgument);
      expect((await failure(selfServe.undoRestore({}, as(tenantId, admin)))).code).toBe(Code.NotFound);
      expect((await failure(selfServe.restoreBackup({ backupId: ofOther!.backupId }, as(tenantId, admin)))).code).toBe(Code.NotFound);
    }
    let backupId = "";
    for (let i = 0; i < perHour; i++) {
      backupId = (await selfServe.createBackup({}, as(tenantId, admin))).backup!.backupId;
    }
    await selfServe.restoreBackup({ backupId }, as(tenantId, admin));
    await selfServe.undoRestore({}, as(tenantId, admin));
  });
});
