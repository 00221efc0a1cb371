import { MikroORM } from "@mikro-orm/postgresql";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { startLateCloseProxy, type LateCloseProxy } from "../../testing/late-close-proxy.ts";
import { discardLostConnections, watchConnectionLoss } from "./connection-loss.ts";
import { isDatabaseUnreachable } from "./database-unreachable.ts";

const url = new URL(inject("databaseUrl"));

let admin: pg.Client;
let proxy: LateCloseProxy;

beforeAll(async () => {
  admin = new pg.Client({ connectionString: url.toString() });
  await admin.connect();
  // The socket's close arrives late, as over a slow network: in between, a connection looks healthy.
  proxy = await startLateCloseProxy({ host: url.hostname, port: Number(url.port) }, 200);
});

afterAll(async () => {
  await admin.end();
  await proxy.close();
});

/** The same server through the proxy. */
function proxied(): string {
  const through = new URL(url);
  through.port = String(proxy.port);
  return through.toString();
}

async function terminate(pid: number): Promise<void> {
  await admin.query("select pg_terminate_backend($1)", [pid]);
}

describe("watchConnectionLoss", () => {
  it("reports a connection the server ended under a query before the socket is seen to close", async () => {
    const client = new pg.Client({ connectionString: proxied() });
    const lost: Error[] = [];
    watchConnectionLoss(client, (error) => lost.push(error));
    await client.connect();
    const { rows } = await client.query<{ pid: number }>("select pg_backend_pid() as pid");
    const failing = client.query("select pg_sleep(10)").catch((error: unknown) => error);
    await terminate(rows[0]!.pid);
    expect(await failing).toMatchObject({ code: "57P01" });
    // The query's own rejection is what reports it: the close is still on its way.
    expect(lost.length).toBeGreaterThan(0);
    expect(lost.every(isDatabaseUnreachable)).toBe(true);
    await client.end().catch(() => undefined);
  });
});

describe("discardLostConnections", () => {
  it("keeps a pg-pool from lending again a connection that the server ended under a query", async () => {
    const pool = new pg.Pool({ connectionString: proxied(), max: 1 });
    pool.on("error", () => {});
    discardLostConnections(pool);
    const lost = await pool.connect();
    const { rows } = await lost.query<{ pid: number }>("select pg_backend_pid() as pid");
    const waiting = pool.connect();
    const failing = lost.query("select pg_sleep(10)").catch((error: unknown) => error);
    await terminate(rows[0]!.pid);
    expect(await failing).toMatchObject({ code: "57P01" });
    // Returned at once, as a caller does on an error, before the socket's close is seen.
    lost.release();
    const next = await waiting;
    expect(next).not.toBe(lost);
    expect((await next.query("select 1 as one")).rows[0].one).toBe(1);
    next.release();
    await pool.end();
  });

  it("gets back the connection of a MikroORM transaction lost mid-way, which Kysely never returns", async () => {
    const orm = new MikroORM({ clientUrl: url.toString(), entities: [], discovery: { warnWhenNoEntities: false }, ensureDatabase: false, pool: { min: 0, max: 1 } });
    discardLostConnections(await orm.em.getConnection().getNativeClient());
    const failed = await orm.em
      .fork()
      .transactional(async (em) => {
        const [row] = await em.execute<{ pid: number }[]>("select pg_backend_pid() as pid");
        await terminate(row!.pid);
        await em.execute("select pg_sleep(10)");
      })
      .catch((error: unknown) => error);
    expect(isDatabaseUnreachable(failed)).toBe(true);
    // The pool's only place is free again.
    const [row] = await orm.em.fork().execute<{ one: number }[]>("select 1 as one");
    expect(row!.one).toBe(1);
    await orm.close();
  });
});
