import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthService } from "../gen/tenantry/auth/v1/auth_service_pb.js";
import { createGrpcJsTransport, startEmbeddedDatabase, tenantIdHeader, type EmbeddedDatabase, type GrpcJsTransport } from "../services/mesh/index.ts";
import { crashDatabase } from "../services/testing/database-crash.ts";
import { freePort } from "../services/testing/free-port.ts";
import { startTestMesh, type TestMesh } from "../services/testing/test-mesh.ts";

/** Calls made in loops until stopped: what succeeded when, and how the rest failed. */
class CallLoop {
  /** Start times (ms since epoch) of the calls that succeeded, by target (a tenant, a service). */
  readonly succeeded = new Map<string, number[]>();
  /** Failed calls, by code name. */
  readonly failed = new Map<string, number>();
  /** The failures whose code is not UNAVAILABLE, with their messages. */
  readonly unexpected: string[] = [];
  #running = true;
  readonly #loops: Promise<void>[] = [];

  /** Runs `call` over and over on `workers` loops; a call names its target. */
  start(target: string, workers: number, call: () => Promise<unknown>): void {
    for (let i = 0; i < workers; i++) {
      this.#loops.push(
        (async () => {
          while (this.#running) {
            const startedAt = Date.now();
            try {
              await call();
              const times = this.succeeded.get(target) ?? [];
              times.push(startedAt);
              this.succeeded.set(target, times);
            } catch (error) {
              const { code, rawMessage } = ConnectError.from(error);
              this.failed.set(Code[code], (this.failed.get(Code[code]) ?? 0) + 1);
              if (code !== Code.Unavailable) {
                this.unexpected.push(`${target}: ${Code[code]} ${rawMessage}`);
              }
              // As a client that retries UNAVAILABLE would, without spinning.
              await new Promise((resolve) => setTimeout(resolve, 5));
            }
          }
        })(),
      );
    }
  }

  /** Whether a call to `target` started at or after `since` and succeeded. */
  succeededSince(target: string, since: number): boolean {
    return (this.succeeded.get(target) ?? []).some((t) => t >= since);
  }

  count(target: string): number {
    return this.succeeded.get(target)?.length ?? 0;
  }

  async stop(): Promise<void> {
    this.#running = false;
    await Promise.all(this.#loops);
  }
}

describe("a database restart under load", () => {
  let dir: string;
  let port: number;
  let database: EmbeddedDatabase;
  let mesh: TestMesh;
  let authTransport: GrpcJsTransport;
  let auth: Client<typeof AuthService>;
  const tenants: string[] = [];
  const password = "restart-password";

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "tenantry-restart-"));
    port = await freePort();
    // Durable, unlike the shared test server: without synchronous commit, a
    // crash loses commits that were already acknowledged.
    database = await startEmbeddedDatabase({ dir, port });
    mesh = await startTestMesh({
      serverUrl: database.url,
      // Routes are trusted for ten minutes, so that a suspension can only arrive through the change feed.
      tenantServiceEnv: { TENANTRY_TENANT_CACHE_TTL_MS: "600000" },
    });
    authTransport = createGrpcJsTransport({ address: `127.0.0.1:${mesh.auth.grpcPort}` });
    auth = createClient(AuthService, authTransport);
    for (let i = 0; i < 3; i++) {
      const tenantId = mesh.uniqueTenantId("restart");
      await mesh.createTenant({ tenantId, owner: { email: "owner@example.com", password } });
      tenants.push(tenantId);
    }
  });

  afterAll(async () => {
    authTransport?.close();
    await mesh?.stop();
    // Only the last instance: the crashed ones have no process left to stop.
    await database?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("keeps every acknowledged write, fails calls only with UNAVAILABLE, and serves again once the server is back", async () => {
    const written = new Map<string, string[]>(tenants.map((t) => [t, []]));
    const tokens = new Map<string, string>();
    for (const tenantId of tenants) {
      tokens.set(tenantId, await mesh.login(tenantId, { email: "owner@example.com", password }));
    }
    const load = new CallLoop();
    for (const tenantId of tenants) {
      load.start(`backend ${tenantId}`, 3, async () => {
        const { entry } = await mesh.entries.createEntry({ title: "written across a restart" }, { headers: { [tenantIdHeader]: tenantId } });
        written.get(tenantId)!.push(entry!.id);
      });
    }
    let turn = 0;
    load.start("auth", 1, () => {
      const tenantId = tenants[turn++ % tenants.length]!;
      return auth.whoAmI({}, { headers: { [tenantIdHeader]: tenantId, authorization: `Bearer ${tokens.get(tenantId)}` } });
    });
    load.start("platform", 1, () => mesh.platformClient.getTenant({ tenantId: tenants[0]! }));

    for (let restart = 0; restart < 2; restart++) {
      const [before] = await mesh.sql<{ started: Date }>("postgres", "select pg_postmaster_start_time() as started");
      const writes = tenants.map((t) => load.count(`backend ${t}`));
      // Under load when it goes down.
      await expect.poll(() => tenants.every((t, i) => load.count(`backend ${t}`) >= writes[i]! + 20), { timeout: 60_000 }).toBe(true);
      await crashDatabase(dir, port);
      database = await startEmbeddedDatabase({ dir, port });
      const back = Date.now();
      await expect
        .poll(() => [...tenants.map((t) => `backend ${t}`), "auth", "platform"].filter((target) => !load.succeededSince(target, back)), { timeout: 60_000 })
        .toEqual([]);
      const [after] = await mesh.sql<{ started: Date }>("postgres", "select pg_postmaster_start_time() as started");
      expect(after!.started.getTime()).toBeGreaterThan(before!.started.getTime());
    }
    await load.stop();

    expect(load.unexpected).toEqual([]);
    for (const tenantId of tenants) {
      const ids = written.get(tenantId)!;
      const { database: tenantDatabase } = (await mesh.platformClient.getTenant({ tenantId })).tenant!;
      const [row] = await mesh.sql<{ n: number }>(tenantDatabase, "select count(*)::int as n from backend.entries where id = any($1::uuid[])", [ids]);
      expect(row!.n, `acknowledged writes of ${tenantId} kept`).toBe(ids.length);
    }
  });

  it("still brings a suspension made through Platform to Backend and Auth by the change feed", async () => {
    // Routes are trusted for ten minutes: only the feed can bring the change.
    const tenantId = tenants[0]!;
    await mesh.entries.createEntry({ title: "before the suspension" }, { headers: { [tenantIdHeader]: tenantId } });
    await mesh.platformClient.suspendTenant({ tenantId, reason: "restart spec" });
    const codeOf = (call: Promise<unknown>) => call.then(() => "OK", (error: unknown) => Code[ConnectError.from(error).code]);
    await expect
      .poll(() => codeOf(mesh.entries.createEntry({ title: "after the suspension" }, { headers: { [tenantIdHeader]: tenantId } })), { timeout: 30_000 })
      .toBe("FailedPrecondition");
    await expect
      .poll(() => codeOf(auth.login({ email: "owner@example.com", password }, { headers: { [tenantIdHeader]: tenantId } })), { timeout: 30_000 })
      .toBe("FailedPrecondition");
  });

  it("still provisions a tenant, which takes an advisory lock and Platform's own connections", async () => {
    const { tenantId } = await mesh.createTenant();
    const { entry } = await mesh.entries.createEntry({ title: "in a tenant made after the restart" }, { headers: { [tenantIdHeader]: tenantId } });
    expect(entry?.title).toBe("in a tenant made after the restart");
  });
});
