import { createClient } from "@connectrpc/connect";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { AuthService } from "../gen/tenantry/auth/v1/auth_service_pb.js";
import { Placement } from "../gen/tenantry/platform/v1/platform_service_pb.js";
import { createGrpcJsTransport } from "../services/mesh/index.ts";
import { tenantIdHeader } from "../services/mesh/index.ts";
import { freePort } from "../services/testing/free-port.ts";
import { newerBackendMigrations, releasedBackendVersion, upcomingBackendVersion } from "../services/testing/newer-backend.ts";
import { cliRuns } from "../services/testing/cli-runs.ts";
import { startTestMesh, type TestMesh } from "../services/testing/test-mesh.ts";

const released = releasedBackendVersion;
const upcoming = upcomingBackendVersion;
const newer = newerBackendMigrations;

let mesh: TestMesh;
let scratch: string;
beforeAll(async () => {
  // Auth and Backend alone, whatever else is registered: the counts of migrations below are of their two schemas.
  [mesh, scratch] = await Promise.all([startTestMesh({ services: ["auth", "backend"] }), mkdtemp(path.join(os.tmpdir(), "tenantry-cli-"))]);
});
afterAll(async () => {
  await mesh?.stop();
  await rm(scratch, { recursive: true, force: true });
});

const { tenantry, tenantryOnTerminal, json } = cliRuns(() => ({ platformAddress: `127.0.0.1:${mesh.platform.grpcPort}`, operatorToken: mesh.operatorToken }));

describe("tenantry tenants", () => {
  it("creates a tenant with its owner, shows, lists, suspends, resumes and offboards it", async () => {
    const tenantId = mesh.uniqueTenantId("cli");
    const password = "correct horse battery";
    const created = await tenantry(["tenants", "create", tenantId, "--name", "Acme Inc.", "--tier", "premium", "--owner-email", "owner@acme.example", "--owner-password-stdin"], {
      input: `${password}\n`,
    });
    expect(created, created.stderr).toMatchObject({ code: 0 });
    expect(created.stdout).toMatch(new RegExp(`^id: +${tenantId}$`, "m"));
    expect(created.stdout).toMatch(/^name: +Acme Inc\.$/m);
    expect(created.stdout).toMatch(/^tier: +premium$/m);
    expect(created.stdout).toMatch(/^placement: +dedicated$/m);
    expect(created.stdout).toMatch(/^status: +active$/m);

    // The password arrived as typed, without the newline that ended it.
    const transport = createGrpcJsTransport({ address: `127.0.0.1:${mesh.auth.grpcPort}` });
    try {
      const tokens = await createClient(AuthService, transport).login({ email: "owner@acme.example", password }, { headers: { "x-tenant-id": tenantId } });
      expect(tokens.accessToken).not.toBe("");
    } finally {
      transport.close();
    }

    expect((await json(["tenants", "get", tenantId])).tenant).toMatchObject({ tenantId, displayName: "Acme Inc.", tier: "TIER_PREMIUM", status: "TENANT_STATUS_ACTIVE" });
    const { tenants } = await json(["tenants", "list"]);
    expect(tenants.map((t: { tenantId: string }) => t.tenantId)).toContain(tenantId);
    const listed = await tenantry(["tenants", "list"]);
    expect(listed.stdout).toMatch(/^ID +NAME +TIER +PLACEMENT +STATUS +CLUSTER +CREATED$/m);
    expect(listed.stdout).toMatch(new RegExp(`^${tenantId} +Acme Inc\\. +premium +dedicated +active +default `, "m"));

    expect((await json(["tenants", "suspend", tenantId, "--reason", "unpaid invoice"])).tenant).toMatchObject({
      status: "TENANT_STATUS_SUSPENDED",
      suspendedReason: "unpaid invoice",
    });
    expect((await json(["tenants", "resume", tenantId])).tenant).toMatchObject({ status: "TENANT_STATUS_ACTIVE" });
    const deleted = await tenantry(["tenants", "delete", tenantId]);
    expect(deleted, deleted.stderr).toMatchObject({ code: 0 });
    expect(deleted.stdout).toMatch(/^status: +offboarding$/m);

    const refused = await tenantry(["tenants", "suspend", tenantId]);
    expect(refused.code).toBe(6);
    expect(refused.stderr).toMatch(/^error: FAILED_PRECONDITION: .+/);
  });

  it("creates a pooled tenant when asked, and shows its placement and pool database", async () => {
    const tenantId = mesh.uniqueTenantId("cli-pooled");
    const created = await tenantry(["tenants", "create", tenantId, "--placement", "pooled"]);
    expect(created, created.stderr).toMatchObject({ code: 0 });
    expect(created.stdout).toMatch(/^placement: +pooled$/m);
    expect(created.stdout).toMatch(new RegExp(`^database: +${mesh.platformDatabase}_pool_1$`, "m"));
    expect((await json(["tenants", "get", tenantId])).tenant).toMatchObject({ tenantId, placement: "PLACEMENT_POOLED", status: "TENANT_STATUS_ACTIVE" });
  });

  it("exits 3 for an unknown tenant, naming the code and Platform's message", async () => {
    const ghost = mesh.uniqueTenantId("ghost");
    const run = await tenantry(["tenants", "get", ghost]);
    expect(run).toMatchObject({ code: 3, stdout: "" });
    expect(run.stderr).toMatch(new RegExp(`^error: NOT_FOUND: .*${ghost}`));
    const asJson = await tenantry(["--json", "tenants", "get", ghost]);
    expect(asJson.code).toBe(3);
    expect(JSON.parse(asJson.stderr)).toEqual({ error: { code: "NOT_FOUND", message: expect.stringContaining(ghost) } });
  });

  it("exits 2 for a usage error and for an argument Platform refuses", async () => {
    for (const args of [[], ["tenants", "create"], ["tenants", "frobnicate"], ["tenants", "create", "acme", "--tier", "gold"], ["--timeout", "soon", "tenants", "list"]]) {
      expect((await tenantry(args)).code, args.join(" ")).toBe(2);
    }
    const ownerWithoutPassword = await tenantry(["tenants", "create", mesh.uniqueTenantId(), "--owner-email", "owner@acme.example"]);
    expect(ownerWithoutPassword.code).toBe(2);
    expect(ownerWithoutPassword.stderr).toContain("TENANTRY_OWNER_PASSWORD");
    const malformed = await tenantry(["tenants", "create", "UPPER"]);
    expect(malformed.code).toBe(2);
    expect(malformed.stderr).toMatch(/^error: INVALID_ARGUMENT: /);
  });
});

describe("tenantry's operator token and address", () => {
  it("exits 4 for a wrong token, and for none, saying where it looked", async () => {
    const wrong = await tenantry(["tenants", "list"], { env: { TENANTRY_OPERATOR_TOKEN: "x".repeat(43) } });
    expect(wrong.code).toBe(4);
    expect(wrong.stderr).toMatch(/^error: UNAUTHENTICATED: /);

    const empty = path.join(scratch, "empty");
    const none = await tenantry(["tenants", "list"], { env: { TENANTRY_OPERATOR_TOKEN: undefined, TENANTRY_DATA_DIR: empty } });
    expect(none.code).toBe(4);
    expect(none.stderr).toContain(path.join(empty, "operator.token"));
  });

  it("reads the token from .tenantry/operator.token when the environment has none", async () => {
    const project = path.join(scratch, "project");
    await mkdir(path.join(project, ".tenantry"), { recursive: true });
    await writeFile(path.join(project, ".tenantry", "operator.token"), `${mesh.operatorToken}\n`, { mode: 0o600 });
    const run = await tenantry(["tenants", "list"], { cwd: project, env: { TENANTRY_OPERATOR_TOKEN: undefined } });
    expect(run, run.stderr).toMatchObject({ code: 0 });
  });

  it("exits 5 when nothing listens at the Platform address", async () => {
    const run = await tenantry(["--platform", `127.0.0.1:${await freePort()}`, "tenants", "list"]);
    expect(run.code).toBe(5);
    expect(run.stderr).toMatch(/^error: UNAVAILABLE: /);
  });

  it("runs as `npx tenantry` from the project root, listing its exit codes in --help", async () => {
    const run = await tenantry(["--help"], { command: ["npx", "tenantry"] });
    expect(run, run.stderr).toMatchObject({ code: 0 });
    expect(run.stdout).toContain("Usage: tenantry");
    expect(run.stdout).toMatch(/Exit codes:\n {2}0 +success\n/);
  });
});

describe("tenantry migrate and fleet status", () => {
  it("migrates the selected tenants past a failing one, with a line per tenant schema, a summary of failures and exit code 1", async () => {
    const [a, b, c] = [await mesh.createTenant(), await mesh.createTenant(), await mesh.createTenant()];
    const selected = [a, b, c].flatMap((t) => ["--tenant", t.tenantId]);
    await mesh.restartBackend(newer);
    // Tenant c's database has something in the way of the new index.
    await mesh.sql(c.database, "create table backend.entries_created_at (x int)");

    const dry = await json(["migrate", "--dry-run", ...selected]);
    expect(dry.totals).toEqual({ total: 6, done: 6, migrated: 0, current: 3, failed: 0 });
    expect(dry.wouldMigrate.map((e: { tenantId: string; service: string }) => `${e.tenantId} ${e.service}`).sort()).toEqual([a, b, c].map((t) => `${t.tenantId} backend`));

    const first = await json(["migrate", "--concurrency", "2", ...selected], 1);
    expect(first.totals).toEqual({ total: 6, done: 6, migrated: 2, current: 3, failed: 1 });
    expect(first.failures).toEqual([
      expect.objectContaining({ tenantId: c.tenantId, service: "backend", outcome: "MIGRATION_OUTCOME_FAILED", error: expect.stringMatching(/entries_created_at.*already exists/) }),
    ]);

    const again = await tenantry(["migrate", ...selected]);
    expect(again.code).toBe(1);
    const lines = again.stderr.trim().split("\n");
    expect(lines).toHaveLength(6);
    const lineOf = (tenantId: string) => lines.find((l) => l.includes(`${tenantId} backend`));
    expect(lineOf(a.tenantId)).toMatch(new RegExp(`^\\d/6 ${a.tenantId} backend skipped at ${upcoming}$`));
    expect(lineOf(c.tenantId)).toMatch(new RegExp(`^\\d/6 ${c.tenantId} backend failed: .*already exists`));
    expect(again.stdout).toMatch(/^6 tenant schemas: 0 migrated, 5 current, 1 failed$/m);
    expect(again.stdout).toMatch(/^TENANT +SERVICE +ERROR$/m);
    expect(again.stdout).toMatch(new RegExp(`^${c.tenantId} +backend +.*already exists`, "m"));
  });

  it("reports the fleet per service with the failed tenants' errors", async () => {
    const status = await json(["fleet", "status"]);
    const backend = status.services.find((s: { service: string }) => s.service === "backend");
    expect(backend).toMatchObject({ latestVersion: upcoming, failed: 1 });
    expect(backend.failedTenants).toEqual([expect.objectContaining({ version: released, error: expect.stringContaining("already exists") })]);

    const human = await tenantry(["fleet", "status"]);
    expect(human, human.stderr).toMatchObject({ code: 0 });
    expect(human.stdout).toMatch(/^SERVICE +LATEST +CURRENT +BEHIND +FAILED$/m);
    expect(human.stdout).toMatch(new RegExp(`^backend +${upcoming} +\\d+ +\\d+ +1$`, "m"));
    expect(human.stdout).toMatch(new RegExp(`^${backend.failedTenants[0].tenantId} +backend +${released} +\\d+ +`, "m"));
  });
});

describe("tenantry clusters", () => {
  it("lists the clusters and registers one, the admin password piped in", async () => {
    const { clusters } = await json(["clusters", "list"]);
    expect(clusters.map((c: { name: string }) => c.name)).toEqual(["default"]);
    const listed = await tenantry(["clusters", "list"]);
    expect(listed.stdout).toMatch(/^default +\S+ +\d+ +local +accepting +\d+ +1000 +\d+ +20000 +\S+$/m);

    // The tests' own server again, draining so that no tenant is placed there.
    const server = new URL(inject("databaseUrl"));
    const register = (name: string, port: string) =>
      tenantry(["--json", "clusters", "register", name, "--host", server.hostname, "--port", port, "--admin-user", decodeURIComponent(server.username), "--admin-password-stdin", "--capacity", "10", "--pool-capacity", "50", "--region", "eu", "--state", "draining"], {
        input: decodeURIComponent(server.password),
      });
    const registered = await register("second", server.port);
    expect(registered, registered.stderr).toMatchObject({ code: 0 });
    expect(JSON.parse(registered.stdout).cluster).toMatchObject({ name: "second", region: "eu", capacity: 10, poolCapacity: 50, state: "CLUSTER_STATE_DRAINING", tenantCount: 0 });

    const unreachable = await register("nowhere", String(await freePort()));
    expect(unreachable.code).toBe(6);
    expect(JSON.parse(unreachable.stderr).error.code).toBe("FAILED_PRECONDITION");
  });

  it("lists a cluster's pool databases and sets one draining, then ready again", async () => {
    const { database } = await mesh.createTenant({ placement: Placement.POOLED });
    // Other tests of this file may have pooled tenants there too.
    const held = (await json(["clusters", "pools", "default"])).poolDatabases.find((p: { name: string }) => p.name === database)?.tenantCount as number;
    expect(held).toBeGreaterThanOrEqual(1);
    const listed = await tenantry(["clusters", "pools", "default"]);
    expect(listed, listed.stderr).toMatchObject({ code: 0 });
    expect(listed.stdout).toMatch(/^NAME +STATE +TENANTS$/m);
    expect(listed.stdout).toMatch(new RegExp(`^${database} +ready +${held}$`, "m"));

    const drained = await tenantry(["clusters", "pool-state", "default", database, "draining"]);
    expect(drained, drained.stderr).toMatchObject({ code: 0 });
    expect(drained.stdout).toMatch(new RegExp(`^${database} +draining +${held}$`, "m"));
    const { poolDatabases } = await json(["clusters", "pools", "default"]);
    expect(poolDatabases).toContainEqual({ cluster: "default", name: database, state: "POOL_DATABASE_STATE_DRAINING", tenantCount: held });
    const { poolDatabase } = await json(["clusters", "pool-state", "default", database, "ready"]);
    expect(poolDatabase).toMatchObject({ name: database, state: "POOL_DATABASE_STATE_READY" });

    const unknown = await tenantry(["--json", "clusters", "pool-state", "default", "nowhere_pool_9", "draining"]);
    expect(JSON.parse(unknown.stderr).error.code).toBe("NOT_FOUND");
    expect((await tenantry(["clusters", "pool-state", "default", database, "full"])).code).not.toBe(0);
  });
});

describe("tenantry backups", () => {
  const owner = { email: "owner@acme.example", password: "correct horse battery" };
  const headers = (tenantId: string) => ({ headers: { [tenantIdHeader]: tenantId } });
  const uuid = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}";

  /** The backup the first test takes, which the second verifies and deletes. */
  let first: { tenantId: string; backupId: string };

  it("backs a tenant up with one line naming the backup, then shows and lists it", async () => {
    const { tenantId } = await mesh.createTenant();
    await mesh.entries.createEntry({ title: "before" }, headers(tenantId));

    const created = await tenantry(["backups", "create", tenantId, "--label", "before the import"]);
    expect(created, created.stderr).toMatchObject({ code: 0 });
    const backupId = new RegExp(`^backing up ${tenantId}: backup (${uuid})\n$`).exec(created.stderr)?.[1];
    expect(backupId, created.stderr).toBeDefined();
    expect(created.stdout).toMatch(new RegExp(`^id: +${backupId}$`, "m"));
    expect(created.stdout).toMatch(/^label: +before the import$/m);
    expect(created.stdout).toMatch(/^state: +succeeded$/m);
    expect(created.stdout).toMatch(/^tables: +\d+$/m);

    const { backup } = await json(["backups", "get", backupId!]);
    expect(backup).toMatchObject({ backupId, tenantId, state: "BACKUP_STATE_SUCCEEDED", label: "before the import" });
    expect(backup.tableCount).toBe(backup.tables.length);
    expect(backup.tables).toContainEqual({ name: "backend.entries", rows: "1", sha256: expect.stringMatching(/^[0-9a-f]{64}$/) });
    const shown = await tenantry(["backups", "get", backupId!]);
    expect(shown.stdout).toMatch(/^TABLE +ROWS +SHA-256$/m);
    expect(shown.stdout).toMatch(/^backend\.entries +1 +[0-9a-f]{64}$/m);

    const listed = await tenantry(["backups", "list", tenantId]);
    expect(listed, listed.stderr).toMatchObject({ code: 0 });
    expect(listed.stdout).toMatch(/^ID +TENANT +STATE +CREATED +SIZE +TABLES +ROWS +VERIFIED +LABEL$/m);
    expect(listed.stdout).toMatch(new RegExp(`^${backupId} +${tenantId} +succeeded +\\S+ +[\\d.]+ k?B +${backup.tables.length} +\\d+ +- +before the import$`, "m"));
    expect((await json(["backups", "list"])).backups.map((b: { backupId: string }) => b.backupId)).toContain(backupId);
    first = { tenantId, backupId: backupId! };
  });

  it("verifies a backup, recording the result, and deletes it", async () => {
    const { tenantId, backupId } = first;
    const verified = await tenantry(["backups", "verify", backupId]);
    expect(verified, verified.stderr).toMatchObject({ code: 0 });
    expect(verified.stdout).toMatch(/^verified: +passed at \S+$/m);
    expect((await tenantry(["backups", "list", tenantId])).stdout).toMatch(new RegExp(`^${backupId} .* passed +before the import$`, "m"));

    const deleted = await tenantry(["backups", "delete", backupId]);
    expect(deleted, deleted.stderr).toMatchObject({ code: 0, stdout: `deleted backup ${backupId}\n` });
    expect((await tenantry(["backups", "get", backupId])).code).toBe(3);
    expect((await tenantry(["backups", "list", tenantId])).stdout).toBe("no backups\n");
  });

  it("shows a bar of tables stored on a terminal while the backup runs", async () => {
    const { tenantId } = await mesh.createTenant();
    // Each backup waits after its snapshot until released, so the bar is seen running.
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    await mesh.restartPlatform({}, { afterBackupStep: (_backupId, step) => (step === "snapshot" ? held : undefined) });
    try {
      const run = tenantryOnTerminal(["backups", "create", tenantId]);
      const running = await run.shown(new RegExp(`backing up ${tenantId} .* 0/\\d+ tables \\| 0 rows \\| 0 B \\| \\d+s \\| backup ${uuid}`));
      release();
      const { code, screen } = await run.done;
      expect(code, screen).toBe(0);
      const total = new RegExp(`0/(\\d+) tables`).exec(running)![1];
      expect(screen).toMatch(new RegExp(`backing up ${tenantId} .* ${total}/${total} tables \\| \\d+ rows \\| [\\d.]+ k?B \\|`));
      expect(screen).toMatch(/^state: +succeeded\r?$/m);
    } finally {
      release();
      await mesh.restartPlatform();
    }
  });

  it("restores in place and undoes it, and clones with the tier, name and placement asked for", async () => {
    const source = await mesh.createTenant({ owner });
    await mesh.entries.createEntry({ title: "in the backup" }, headers(source.tenantId));
    const { backup } = await json(["backups", "create", source.tenantId]);
    await mesh.entries.createEntry({ title: "after the backup" }, headers(source.tenantId));
    const titles = async (tenantId: string) => (await mesh.entries.listEntries({}, headers(tenantId))).entries.map((e) => e.title).sort();

    const restored = await tenantry(["backups", "restore", backup.backupId]);
    expect(restored, restored.stderr).toMatchObject({ code: 0 });
    expect(restored.stdout).toMatch(/^kind: +in_place$/m);
    expect(restored.stdout).toMatch(/^state: +succeeded$/m);
    expect(restored.stdout).toMatch(new RegExp(`^replaced: +${source.database}$`, "m"));
    expect(restored.stdout).toMatch(/^undo until: +\S+$/m);
    expect(restored.stdout).toMatch(/^tenant status: +active$/m);
    expect(await titles(source.tenantId)).toEqual(["in the backup"]);

    const undone = await tenantry(["backups", "undo", source.tenantId]);
    expect(undone, undone.stderr).toMatchObject({ code: 0 });
    expect(undone.stdout).toMatch(/^state: +undone$/m);
    expect(undone.stdout).toMatch(new RegExp(`^served from: +${source.database}$`, "m"));
    expect(await titles(source.tenantId)).toEqual(["after the backup", "in the backup"]);
    const again = await tenantry(["backups", "undo", source.tenantId]);
    expect(again.code).toBe(3);
    expect(again.stderr).toMatch(/^error: NOT_FOUND: /);

    const cloneId = mesh.uniqueTenantId("clone");
    const cloned = await json(["backups", "restore", backup.backupId, "--to", cloneId, "--tier", "premium", "--name", "Acme copy"]);
    expect(cloned.restore).toMatchObject({ kind: "RESTORE_KIND_CLONE", state: "RESTORE_STATE_SUCCEEDED", tenantId: cloneId });
    expect(cloned.tenant).toMatchObject({ tenantId: cloneId, tier: "TIER_PREMIUM", displayName: "Acme copy", status: "TENANT_STATUS_ACTIVE" });
    expect(await mesh.login(cloneId, owner)).not.toBe("");
    expect(await titles(cloneId)).toEqual(["in the backup"]);

    const taken = await tenantry(["backups", "restore", backup.backupId, "--to", cloneId]);
    expect(taken.code).toBe(6);
    expect(taken.stderr).toMatch(/^error: ALREADY_EXISTS: /);
    const tierInPlace = await tenantry(["backups", "restore", backup.backupId, "--tier", "premium"]);
    expect(tierInPlace.code).toBe(2);
    expect(tierInPlace.stderr).toContain("--to");

    const pooledId = mesh.uniqueTenantId("pclone");
    const pooled = await json(["backups", "restore", backup.backupId, "--to", pooledId, "--placement", "pooled"]);
    expect(pooled.tenant).toMatchObject({ tenantId: pooledId, placement: "PLACEMENT_POOLED", status: "TENANT_STATUS_ACTIVE" });
    expect(await titles(pooledId)).toEqual(["in the backup"]);
    const placementInPlace = await tenantry(["backups", "restore", backup.backupId, "--placement", "pooled"]);
    expect(placementInPlace.code).toBe(2);
  });

  it("exits 1 when a verification fails, and 6 for a restore of a damaged backup", async () => {
    const { tenantId } = await mesh.createTenant();
    await mesh.entries.createEntry({ title: "x".repeat(200) }, headers(tenantId));
    const { backup } = await json(["backups", "create", tenantId]);
    const entries = backup.tables.findIndex((t: { name: string }) => t.name === "backend.entries");
    const file = path.join(mesh.sharedEnv.TENANTRY_DATA_DIR, "backups", tenantId, backup.backupId, `table-${String(entries + 1).padStart(4, "0")}.copy.zst`);
    const bytes = await readFile(file);
    bytes[Math.floor(bytes.length / 2)]! ^= 0x01;
    await writeFile(file, bytes);

    const verified = await tenantry(["backups", "verify", backup.backupId]);
    expect(verified.code, verified.stderr).toBe(1);
    expect(verified.stdout).toMatch(/^verified: +failed at \S+$/m);
    expect(verified.stdout).toMatch(/^verify error: .*backend\.entries/m);
    const restored = await tenantry(["backups", "restore", backup.backupId, "--to", mesh.uniqueTenantId("damaged")]);
    expect(restored.code).toBe(6);
    expect(restored.stderr).toMatch(/^error: FAILED_PRECONDITION: .*backend\.entries/);
  });

  it("exits 2 for a malformed id or a missing argument, 3 for an unknown backup or tenant", async () => {
    expect((await tenantry(["backups", "get", "not-a-uuid"])).code).toBe(2);
    expect((await tenantry(["backups", "get", "00000000-0000-4000-8000-000000000000"])).code).toBe(3);
    const unknown = await tenantry(["backups", "create", mesh.uniqueTenantId("nobody")]);
    expect(unknown).toMatchObject({ code: 3, stdout: "" });
    expect(unknown.stderr).toMatch(/^error: NOT_FOUND: /);
    const asJson = await tenantry(["--json", "backups", "create", mesh.uniqueTenantId("nobody")]);
    expect(asJson.code).toBe(3);
    expect(JSON.parse(asJson.stderr).error.code).toBe("NOT_FOUND");
    expect((await tenantry(["backups", "restore"])).code).toBe(2);
  });
});
