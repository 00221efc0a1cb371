import { Code } from "@connectrpc/connect";
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { SecretBox } from "../../mesh/index.ts";
import { failure } from "../../testing/failure.ts";
import { newDataKey, openManifest, sealManifest } from "./backup-envelope.ts";
import { backupFormat, checkFormat, compressionOf, gzipBackupFormat, manifestVersions, tableFileName, type BackupManifest } from "./backup-manifest.ts";

const box = new SecretBox(randomBytes(32));
const key = { tenantId: "acme", backupId: "0b9c8d2e-6f3a-4c1b-9a7e-2d5f8e1c3b4a" };
const manifest: BackupManifest = {
  format: backupFormat,
  ...key,
  createdAt: "2026-12-01T00:00:00.000Z",
  placement: { cluster: "default", database: "tenant_acme" },
  serverVersion: "18.4",
  compression: "zstd",
  services: { auth: { migrations: ["0001-a", "0002-b"] }, backend: { migrations: [] } },
  tables: [],
  sequences: [],
};

/** The error a synchronous check throws. */
const refused = (check: () => unknown) => failure(Promise.resolve().then(check));

describe("backup manifests", () => {
  it("name table files in the backup's order, ending as they are compressed", () => {
    expect([0, 1, 9].map((index) => tableFileName(index, "zstd"))).toEqual(["table-0001.copy.zst", "table-0002.copy.zst", "table-0010.copy.zst"]);
    expect([0, 9].map((index) => tableFileName(index, "gzip"))).toEqual(["table-0001.copy.gz", "table-0010.copy.gz"]);
  });

  it("say how their files are compressed: zstd from format 1.1, gzip where they say nothing", () => {
    expect(compressionOf(manifest)).toBe("zstd");
    expect(compressionOf({})).toBe("gzip");
  });

  it("give each service's version as its newest migration applied", () => {
    expect(manifestVersions(manifest)).toEqual({ auth: "0002-b", backend: "" });
  });

  it("read minor versions of their major and refuse another major, naming it", async () => {
    for (const format of [backupFormat, gzipBackupFormat, "tenantry-backup/1.4"]) {
      expect(() => checkFormat(format, key.backupId)).not.toThrow();
    }
    for (const format of ["tenantry-backup/2", "tenantry-backup/10", "other/1", undefined]) {
      const error = await refused(() => checkFormat(format, key.backupId));
      expect(error.code).toBe(Code.FailedPrecondition);
      expect(error.rawMessage).toContain(`"${String(format)}"`);
      expect(error.rawMessage).toContain("it reads tenantry-backup/1.x");
    }
  });

  it("open with the master key, for the backup they were sealed for only", async () => {
    const dataKey = newDataKey(box, key);
    const sealed = sealManifest(dataKey, manifest);
    const opened = openManifest(box, key, sealed);
    expect(opened.manifest).toEqual(manifest);
    expect(opened.dataKey.key.equals(dataKey.key)).toBe(true);
    expect(sealed.toString()).not.toContain("0001-a");

    expect((await refused(() => openManifest(box, { ...key, tenantId: "globex" }, sealed))).rawMessage).toMatch(/files were moved/);
    expect((await refused(() => openManifest(new SecretBox(randomBytes(32)), key, sealed))).rawMessage).toMatch(/another TENANTRY_MASTER_KEY/);
    const envelope = JSON.parse(sealed.toString()) as Record<string, string>;
    const tampered = Buffer.from(JSON.stringify({ ...envelope, manifest: envelope.manifest!.replace(/^./, (c) => (c === "A" ? "B" : "A")) }));
    expect((await refused(() => openManifest(box, key, tampered))).code).toBe(Code.FailedPrecondition);
    expect((await refused(() => openManifest(box, key, Buffer.from("{")))).rawMessage).toMatch(/not JSON/);
  });
});
