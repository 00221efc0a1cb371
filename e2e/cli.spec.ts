import { createClient } from "@connectrpc/connect";
import { spawn } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { AuthService } from "../gen/tenantry/auth/v1/auth_service_pb.js";
import { createGrpcJsTransport } from "../services/mesh/index.ts";
import { freePort } from "../services/testing/free-port.ts";
import { newerBackendMigrations, releasedBackendVersion, upcomingBackendVersion } from "../services/testing/newer-backend.ts";
import { startTestMesh, type TestMesh } from "../services/testing/test-mesh.ts";

const root = path.resolve(import.meta.dirname, "..");
const main = path.join(root, "services/cli/main.ts");

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

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

interface RunOptions {
  /** Settings over the defaults (this mesh's Platform and operator token); undefined removes one. */
  env?: Record<string, string | undefined>;
  /** What to pipe into standard input. */
  input?: string;
  cwd?: string;
  /** The program to run instead of `node services/cli/main.ts`. */
  command?: [string, ...string[]];
}

/** Runs the CLI in a process of its own, as an operator would, against this mesh's Platform. */
function tenantry(args: string[], options: RunOptions = {}): Promise<Run> {
  const env: Record<string, string> = {};
  const settings = {
    TENANTRY_PLATFORM_ADDRESS: `127.0.0.1:${mesh.platform.grpcPort}`,
    TENANTRY_OPERATOR_TOKEN: mesh.operatorToken,
    ...options.env,
  };
  for (const [name, value] of Object.entries({ ...process.env, ...settings })) {
    if (value !== undefined && (!name.startsWith("TENANTRY_") || name in settings)) {
      env[name] = value;
    }
  }
  const [program, ...programArgs] = options.command ?? [process.execPath, main];
  return new Promise((resolve, reject) => {
    const child = spawn(program, [...programArgs, ...args], { cwd: options.cwd ?? root, env, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(options.input ?? "");
  });
}

/** Runs the CLI with --json and returns its parsed stdout, expecting `code`. */
async function json(args: string[], code = 0, options: RunOptions = {}): Promise<any> {
  const run = await tenantry(["--json", ...args], options);
  expect(run, run.stderr).toMatchObject({ code });
  return JSON.parse(run.stdout);
}

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
    expect(listed.stdout).toMatch(/^ID +NAME +TIER +STATUS +CLUSTER +CREATED$/m);
    expect(listed.stdout).toMatch(new RegExp(`^${tenantId} +Acme Inc\\. +premium +active +default `, "m"));

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
    expect(listed.stdout).toMatch(/^default +\S+ +\d+ +local +accepting +\d+ +1000 +\S+$/m);

    // The tests' own server again, draining so that no tenant is placed there.
    const server = new URL(inject("databaseUrl"));
    const register = (name: string, port: string) =>
      tenantry(["--json", "clusters", "register", name, "--host", server.hostname, "--port", port, "--admin-user", decodeURIComponent(server.username), "--admin-password-stdin", "--capacity", "10", "--region", "eu", "--state", "draining"], {
        input: decodeURIComponent(server.password),
      });
    const registered = await register("second", server.port);
    expect(registered, registered.stderr).toMatchObject({ code: 0 });
    expect(JSON.parse(registered.stdout).cluster).toMatchObject({ name: "second", region: "eu", capacity: 10, state: "CLUSTER_STATE_DRAINING", tenantCount: 0 });

    const unreachable = await register("nowhere", String(await freePort()));
    expect(unreachable.code).toBe(6);
    expect(JSON.parse(unreachable.stderr).error.code).toBe("FAILED_PRECONDITION");
  });
});
