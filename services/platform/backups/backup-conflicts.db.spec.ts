import { Code, type Client } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BackupService } from "../../../gen/tenantry/platform/v1/backup_service_pb.js";
import { operatorCredentialInterceptor } from "../../mesh/index.ts";
import { failure } from "../../testing/failure.ts";
import { startTestMesh, type TestMesh } from "../../testing/test-mesh.ts";

let mesh: TestMesh;
let backups: Client<typeof BackupService>;
beforeAll(async () => {
  mesh = await startTestMesh({ services: ["auth", "backend"] });
  backups = mesh.client("platform", BackupService, [operatorCredentialInterceptor(mesh.operatorToken)]);
});
afterAll(() => mesh?.stop());

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
