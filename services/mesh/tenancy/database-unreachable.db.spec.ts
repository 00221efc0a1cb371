import { Code, ConnectError } from "@connectrpc/connect";
import { MikroORM } from "@mikro-orm/postgresql";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import net from "node:net";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { freePort } from "../../testing/free-port.ts";
import { discardLostConnections } from "./connection-loss.ts";
import { isDatabaseUnreachable } from "./database-unreachable.ts";

const url = inject("databaseUrl");

/** The error `call` rejects with. */
async function rejection(call: Promise<unknown>): Promise<unknown> {
  return call.then(
    () => {
      throw new Error("expected the call to fail");
    },
    (error: unknown) => error,
  );
}

/** A connected client that records its 'error' events instead of crashing the process. */
async function connected(connectionString = url): Promise<{ client: pg.Client; errors: Error[] }> {
  const client = new pg.Client({ connectionString });
  const errors: Error[] = [];
  client.on("error", (error) => errors.push(error));
  await client.connect();
  return { client, errors };
}

let admin: pg.Client;

beforeAll(async () => {
  admin = (await connected()).client;
});

afterAll(async () => {
  await admin.end();
});

/** Has the server end the connection of `client` (pg_terminate_backend) while `during` runs on it. */
async function terminateDuring(client: pg.Client, during: (client: pg.Client) => Promise<unknown>): Promise<unknown> {
  const { rows } = await client.query<{ pid: number }>("select pg_backend_pid() as pid");
  const failing = rejection(during(client));
  await admin.query("select pg_terminate_backend($1)", [rows[0]!.pid]);
  return failing;
}

describe("isDatabaseUnreachable", () => {
  it("recognises a connection refused: nothing listens on the port", async () => {
    const client = new pg.Client({ host: "127.0.0.1", port: await freePort(), user: "nobody", database: "none" });
    const error = await rejection(client.connect());
    expect(error).toMatchObject({ code: "ECONNREFUSED" });
    expect(isDatabaseUnreachable(error)).toBe(true);
  });

  it("recognises a connection the server ended under a query (admin shutdown, 57P01)", async () => {
    const { client } = await connected();
    const error = await terminateDuring(client, (c) => c.query("select pg_sleep(10)"));
    expect(error).toMatchObject({ code: "57P01" });
    expect(isDatabaseUnreachable(error)).toBe(true);
    await client.end().catch(() => undefined);
  });

  it("recognises a client whose connection broke, reported and then used again", async () => {
    const { client, errors } = await connected();
    await terminateDuring(client, (c) => c.query("select pg_sleep(10)"));
    await expect.poll(() => errors.length, { timeout: 10_000 }).toBeGreaterThan(0);
    expect(errors.every(isDatabaseUnreachable)).toBe(true);
    const error = await rejection(client.query("select 1"));
    expect((error as Error).message).toBe("Client has encountered a connection error and is not queryable");
    expect(isDatabaseUnreachable(error)).toBe(true);
  });

  it("recognises too many connections (53300)", async () => {
    const role = `unreachable_${randomBytes(4).toString("hex")}`;
    await admin.query(`create role ${role} login password 'secret' connection limit 1`);
    try {
      const as = new URL(url);
      as.username = role;
      as.password = "secret";
      const first = await connected(as.toString());
      const error = await rejection(new pg.Client({ connectionString: as.toString() }).connect());
      expect(error).toMatchObject({ code: "53300" });
      expect(isDatabaseUnreachable(error)).toBe(true);
      await first.client.end();
    } finally {
      await admin.query(`drop role ${role}`);
    }
  });

  it("recognises a connection that does not open in time, from pg and from pg-pool", async () => {
    // Accepts connections and never answers them.
    const silent = net.createServer(() => {});
    silent.listen(0, "127.0.0.1");
    await once(silent, "listening");
    const port = (silent.address() as net.AddressInfo).port;
    try {
      const fromClient = await rejection(new pg.Client({ host: "127.0.0.1", port, connectionTimeoutMillis: 100 }).connect());
      expect(isDatabaseUnreachable(fromClient)).toBe(true);
      const pool = new pg.Pool({ host: "127.0.0.1", port, connectionTimeoutMillis: 100 });
      const fromPool = await rejection(pool.query("select 1"));
      expect(isDatabaseUnreachable(fromPool)).toBe(true);
      await pool.end();
    } finally {
      silent.close();
    }
  });

  it("recognises a connection reset by the peer", async () => {
    const resetting = net.createServer((socket) => socket.resetAndDestroy());
    resetting.listen(0, "127.0.0.1");
    await once(resetting, "listening");
    try {
      const client = new pg.Client({ host: "127.0.0.1", port: (resetting.address() as net.AddressInfo).port });
      const error = await rejection(client.connect());
      expect(isDatabaseUnreachable(error)).toBe(true);
    } finally {
      resetting.close();
    }
  });

  describe("through MikroORM's DriverException", () => {
    let orm: MikroORM;
    beforeAll(async () => {
      orm = new MikroORM({ clientUrl: url, entities: [], discovery: { warnWhenNoEntities: false }, ensureDatabase: false, pool: { min: 0, max: 1 } });
      // Else the connection lost in a transaction would keep the pool's only place.
      discardLostConnections(await orm.em.getConnection().getNativeClient());
    });
    afterAll(async () => {
      await orm.close();
    });

    it("recognises a connection lost in a transaction", async () => {
      const error = await rejection(
        orm.em.fork().transactional(async (em) => {
          const [row] = await em.execute<{ pid: number }[]>("select pg_backend_pid() as pid");
          await admin.query("select pg_terminate_backend($1)", [row!.pid]);
          await em.execute("select pg_sleep(1)");
        }),
      );
      expect((error as Error).name).toMatch(/Exception$/);
      expect(isDatabaseUnreachable(error)).toBe(true);
    });

    it("does not take a constraint violation or a syntax error for one", async () => {
      const em = orm.em.fork();
      const syntax = await rejection(em.execute("selec 1"));
      expect(syntax).toMatchObject({ name: "SyntaxErrorException" });
      expect(isDatabaseUnreachable(syntax)).toBe(false);
      const unique = await rejection(
        em.transactional(async (tx) => {
          await tx.execute("create temp table twice (n int primary key) on commit drop");
          await tx.execute("insert into twice values (1), (1)");
        }),
      );
      expect(unique).toMatchObject({ name: "UniqueConstraintViolationException" });
      expect(isDatabaseUnreachable(unique)).toBe(false);
    });
  });

  it("looks through `cause` chains and AggregateError", async () => {
    const refused = await rejection(new pg.Client({ host: "127.0.0.1", port: await freePort() }).connect());
    expect(isDatabaseUnreachable(ConnectError.from(refused))).toBe(true);
    expect(isDatabaseUnreachable(new Error("the query failed", { cause: new Error("wrapped", { cause: refused }) }))).toBe(true);
    expect(isDatabaseUnreachable(new AggregateError([new Error("other"), refused]))).toBe(true);
  });

  it("recognises every connection exception and server state that a retry may get past", () => {
    for (const code of ["08000", "08003", "08006", "08001", "08004", "57P01", "57P02", "57P03", "53300"]) {
      const error = new pg.DatabaseError("from the server", 0, "error");
      error.code = code;
      expect(isDatabaseUnreachable(error), code).toBe(true);
    }
    for (const code of ["ECONNRESET", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH"]) {
      expect(isDatabaseUnreachable(Object.assign(new Error(code), { code })), code).toBe(true);
    }
  });

  it("leaves everything else alone", async () => {
    const { client } = await connected();
    await client.end();
    // A client this process closed is a fault of the code that used it, not of the database.
    const closed = await rejection(client.query("select 1"));
    expect(isDatabaseUnreachable(closed)).toBe(false);
    const dropped = new pg.DatabaseError("terminating connection because database was dropped", 0, "error");
    dropped.code = "57P04";
    expect(isDatabaseUnreachable(dropped)).toBe(false);
    expect(isDatabaseUnreachable(new ConnectError("no", Code.Internal))).toBe(false);
    expect(isDatabaseUnreachable(new Error("Connection terminated unexpectedly, or so they say"))).toBe(false);
    expect(isDatabaseUnreachable(undefined)).toBe(false);
    expect(isDatabaseUnreachable("ECONNRESET")).toBe(false);
    const looped = new Error("looped") as Error & { cause: unknown };
    looped.cause = looped;
    expect(isDatabaseUnreachable(looped)).toBe(false);
  });
});
