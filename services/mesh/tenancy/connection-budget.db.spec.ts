import { Code, ConnectError } from "@connectrpc/connect";
import { randomBytes } from "node:crypto";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { inject } from "vitest";
import { startLateCloseProxy } from "../../testing/late-close-proxy.ts";
import { startSingleBackend, type SingleBackend } from "../../testing/single-service.ts";
import { ConnectionBudget, type ConnectionBudgetOptions, type LeasedClient, type TenantEndpoint } from "./connection-budget.ts";
import type { TenantRoute } from "./tenant-directory.ts";

const server = new URL(inject("databaseUrl"));
const endpoint = (tenantId: string, database = "postgres"): TenantEndpoint => ({
  tenantId,
  host: server.hostname,
  port: Number(server.port),
  database,
  user: decodeURIComponent(server.username),
  password: decodeURIComponent(server.password),
});

function budget(options: Partial<ConnectionBudgetOptions> = {}) {
  const applicationName = `budget-test-${randomBytes(4).toString("hex")}`;
  return new ConnectionBudget({
    maxConnections: 3,
    maxConnectionsPerTenant: 2,
    acquireTimeoutMs: 5000,
    idleTimeoutMs: 10_000,
    applicationName,
    ...options,
  });
}

/** Has the server end the connection of `client` (pg_terminate_backend) while `during` runs on it; returns what `during` rejects with. */
async function terminateDuring(client: pg.ClientBase, during: () => Promise<unknown>): Promise<unknown> {
  const { rows } = await client.query<{ pid: number }>("select pg_backend_pid() as pid");
  const failing = during().then(
    () => new Error("expected the query to fail"),
    (error: unknown) => error,
  );
  const admin = new pg.Client({ connectionString: server.toString() });
  await admin.connect();
  await admin.query("select pg_terminate_backend($1)", [rows[0]!.pid]);
  await admin.end();
  return failing;
}

async function hold(client: LeasedClient, ms: number) {
  await client.query("select pg_sleep($1)", [ms / 1000]);
  client.release();
}

describe("connection budget", () => {
  it("never opens more connections than the ceiling, and serves every caller", async () => {
    const b = budget({ maxConnections: 3, maxConnectionsPerTenant: 2 });
    let maxOpen = 0;
    const calls = Array.from({ length: 40 }, async (_, i) => {
      const client = await b.acquire(endpoint(`tenant-${i % 8}`));
      maxOpen = Math.max(maxOpen, b.stats().open);
      await hold(client, 5);
    });
    await Promise.all(calls);
    expect(maxOpen).toBeLessThanOrEqual(3);
    expect(b.stats()).toMatchObject({ inUse: 0, waiting: 0 });
    await b.close();
    expect(b.stats().open).toBe(0);
  });

  it("fails a caller with UNAVAILABLE when no connection frees up in time", async () => {
    const b = budget({ maxConnections: 1, maxConnectionsPerTenant: 1, acquireTimeoutMs: 200 });
    const held = await b.acquire(endpoint("holder"));
    const started = Date.now();
    const error = await b.acquire(endpoint("other")).then(() => undefined, (e: unknown) => e);
    expect(error).toBeInstanceOf(ConnectError);
    expect((error as ConnectError).code).toBe(Code.Unavailable);
    expect(Date.now() - started).toBeGreaterThanOrEqual(150);
    held.release();
    const next = await b.acquire(endpoint("other"));
    next.release();
    await b.close();
  });

  it("closes an idle connection of another tenant to make room", async () => {
    const b = budget({ maxConnections: 1, maxConnectionsPerTenant: 1 });
    const first = await b.acquire(endpoint("first"));
    const firstPid = (await first.query("select pg_backend_pid() as pid")).rows[0].pid;
    first.release();
    const second = await b.acquire(endpoint("second"));
    const secondPid = (await second.query("select pg_backend_pid() as pid")).rows[0].pid;
    expect(secondPid).not.toBe(firstPid);
    expect(b.stats()).toMatchObject({ open: 1, inUse: 1, tenants: 1 });
    second.release();
    await b.close();
  });

  it("reuses a tenant's idle connection", async () => {
    const b = budget();
    const a = await b.acquire(endpoint("same"));
    const pid = (await a.query("select pg_backend_pid() as pid")).rows[0].pid;
    a.release();
    const again = await b.acquire(endpoint("same"));
    expect((await again.query("select pg_backend_pid() as pid")).rows[0].pid).toBe(pid);
    again.release();
    expect(b.stats().opened).toBe(1);
    await b.close();
  });

  it("lends the connection released last, and closes those left idle longer than the idle timeout", async () => {
    const b = budget({ idleTimeoutMs: 200 });
    const kept = await b.acquire(endpoint("busy"));
    const [older, newer] = [await b.acquire(endpoint("quiet")), await b.acquire(endpoint("quiet"))];
    const newerPid = (await newer.query("select pg_backend_pid() as pid")).rows[0].pid;
    older.release();
    newer.release();
    // The one taken again is the last released; the other is left to age.
    const again = await b.acquire(endpoint("quiet"));
    expect((await again.query("select pg_backend_pid() as pid")).rows[0].pid).toBe(newerPid);
    again.release();
    for (let waited = 0; b.stats().open > 1; waited += 20) {
      expect(waited).toBeLessThan(10_000);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(b.stats()).toMatchObject({ open: 1, inUse: 1, tenants: 1, opened: 3 });
    expect((await kept.query("select 1 as one")).rows).toEqual([{ one: 1 }]);
    kept.release();
    await b.close();
  });

  it("serves waiters in the order they came", async () => {
    const b = budget({ maxConnections: 1, maxConnectionsPerTenant: 1 });
    const held = await b.acquire(endpoint("a"));
    const order: string[] = [];
    const waiters = ["b", "c", "b", "d"].map((tenant, i) =>
      b.acquire(endpoint(tenant)).then((client) => {
        order.push(`${tenant}${i}`);
        client.release();
      }),
    );
    expect(b.stats().waiting).toBe(4);
    held.release();
    await Promise.all(waiters);
    expect(order).toEqual(["b0", "c1", "b2", "d3"]);
    await b.close();
  });

  it("fails with UNAVAILABLE when the tenant's database cannot be reached", async () => {
    const b = budget();
    const error = await b.acquire(endpoint("lost", "no_such_database")).then(() => undefined, (e: unknown) => e);
    expect((error as ConnectError).code).toBe(Code.Unavailable);
    expect((error as ConnectError).rawMessage).not.toMatch(/no_such_database/);
    expect(b.stats()).toMatchObject({ open: 0, inUse: 0 });
    await b.close();
  });

  it("does not lend again a connection that the server ended under a query", async () => {
    // The socket's close arrives late, as over a slow network: in between, the connection looks healthy.
    const proxy = await startLateCloseProxy({ host: server.hostname, port: Number(server.port) }, 200);
    const b = budget({ maxConnections: 1, maxConnectionsPerTenant: 1 });
    const ended = { ...endpoint("ended"), port: proxy.port };
    const lost = await b.acquire(ended);
    const waiting = b.acquire(ended);
    const error = await terminateDuring(lost, () => lost.query("select pg_sleep(10)"));
    expect((error as { code?: string }).code).toBe("57P01");
    // Returned at once, as a caller does on an error, before the socket's close is seen.
    lost.release();
    const next = await waiting;
    expect(next).not.toBe(lost);
    expect((await next.query("select 1 as one")).rows[0].one).toBe(1);
    next.release();
    await b.close();
    await proxy.close();
  });

  it("takes back a connection lost in a transaction that its holder never returns", async () => {
    const b = budget({ maxConnections: 1, maxConnectionsPerTenant: 1 });
    const lost = await b.acquire(endpoint("abandoned"));
    await lost.query("begin");
    await terminateDuring(lost, () => lost.query("select pg_sleep(10)"));
    // Like Kysely after a failed rollback: never released.
    await lost.query("rollback").catch(() => undefined);
    await expect.poll(() => b.stats(), { timeout: 10_000 }).toMatchObject({ open: 0, inUse: 0 });
    const next = await b.acquire(endpoint("abandoned"));
    expect((await next.query("select 1 as one")).rows[0].one).toBe(1);
    next.release();
    lost.release();
    expect(b.stats()).toMatchObject({ open: 1, inUse: 0 });
    await b.close();
  });
});

describe("connection budget under a real workload", () => {
  let backend: SingleBackend;
  beforeAll(async () => {
    backend = await startSingleBackend({
      env: { TENANTRY_DB_MAX_CONNECTIONS: "4", TENANTRY_DB_MAX_CONNECTIONS_PER_TENANT: "2", TENANTRY_DB_ACQUIRE_TIMEOUT_MS: "30000" },
    });
  });
  afterAll(() => backend?.stop());

  it("keeps Backend within its ceiling in pg_stat_activity while many calls across more tenants complete", async () => {
    const tenants: TenantRoute[] = [];
    for (let i = 0; i < 10; i++) {
      tenants.push(await backend.createTenant());
    }
    const databases = tenants.map((t) => t.database);
    let maxSeen = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const [row] = await backend.sql<{ n: number }>(
          "postgres",
          "select count(*)::int as n from pg_stat_activity where application_name = 'tenantry-backend' and datname = any($1)",
          [databases],
        );
        maxSeen = Math.max(maxSeen, row!.n);
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
    })();
    const calls = Array.from({ length: 300 }, async (_, i) => {
      const headers = { "x-tenant-id": tenants[i % tenants.length]!.tenantId };
      const { entry } = await backend.entries.createEntry({ title: `call ${i}` }, { headers });
      await backend.entries.getEntry({ id: entry!.id }, { headers });
      return entry!.id;
    });
    const ids = await Promise.all(calls);
    sampling = false;
    await sampler;
    expect(new Set(ids).size).toBe(300);
    expect(maxSeen).toBeGreaterThan(0);
    expect(maxSeen).toBeLessThanOrEqual(4);
    expect(backend.service.tenancy.budget.stats().open).toBeLessThanOrEqual(4);
    let stored = 0;
    for (const database of databases) {
      const [row] = await backend.sql<{ n: number }>(database, "select count(*)::int as n from backend.entries");
      stored += row!.n;
    }
    expect(stored).toBe(300);
  });
});
