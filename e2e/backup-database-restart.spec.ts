import { Code, type Client } from "@connectrpc/connect";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BackupService, BackupState } from "../gen/tenantry/platform/v1/backup_service_pb.js";
import { operatorCredentialInterceptor, startEmbeddedDatabase, tenantIdHeader, type EmbeddedDatabase } from "../services/mesh/index.ts";
import { crashDatabase } from "../services/testing/database-crash.ts";
import { failure } from "../services/testing/failure.ts";
import { freePort } from "../services/testing/free-port.ts";
import { startTestMesh, type TestMesh } from "../services/testing/test-mesh.ts";

describe("a backup across a database restart", () => {
  let dir: string;
  let port: number;
  let database: EmbeddedDatabase;
  let mesh: TestMesh;
  let backups: Client<typeof BackupService>;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "tenantry-backup-restart-"));
    port = await freePort();
    // Durable: a crash of a server without synchronous commit loses the backup's record.
    database = await startEmbeddedDatabase({ dir, port });
    mesh = await startTestMesh({ serverUrl: database.url, services: ["auth", "backend"] });
    backups = mesh.client("platform", BackupService, [operatorCredentialInterceptor(mesh.operatorToken)]);
  });

  afterAll(async () => {
    await mesh?.stop();
    await database?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("that loses its snapshot is UNAVAILABLE (take it again), recorded FAILED with that reason, and leaves no files", async () => {
    const { tenantId } = await mesh.createTenant();
    await mesh.entries.createEntry({ title: "before the restart" }, { headers: { [tenantIdHeader]: tenantId } });
    // The server crashes and is back between the snapshot's export and the workers' import of it.
    await mesh.restartPlatform({}, {
      afterBackupStep: async (_id, step) => {
        if (step === "snapshot") {
          await crashDatabase(dir, port);
          database = await startEmbeddedDatabase({ dir, port });
        }
      },
    });
    try {
      const error = await failure(backups.createBackup({ tenantId }));
      expect([error.code, error.rawMessage]).toEqual([Code.Unavailable, "the backup's snapshot was lost with its connection (the tenant's database restarted, or its connections were ended); take it again"]);
      const [backup] = (await backups.listBackups({ tenantId })).backups;
      expect([backup?.state, backup?.failureReason]).toEqual([BackupState.FAILED, error.rawMessage]);
      const files = await readdir(path.join(mesh.sharedEnv.TENANTRY_DATA_DIR, "backups", tenantId), { recursive: true, withFileTypes: true }).catch(() => []);
      expect(files.filter((f) => f.isFile())).toEqual([]);
    } finally {
      await mesh.restartPlatform();
    }
    expect((await backups.createBackup({ tenantId })).backup?.state).toBe(BackupState.SUCCEEDED);
  });
});
