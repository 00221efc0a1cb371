import { randomBytes } from "node:crypto";
import pg from "pg";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, inject, it } from "vitest";
import { createLogger } from "../../mesh/index.ts";
import { migrations } from "../migrations/index.ts";
import { createPlatformOrm, ensurePlatformDatabase, migratePlatformDatabase } from "./platform-database.ts";

describe("platform database", () => {
  it("is migrated once when Platforms start at the same moment", async () => {
    const url = new URL(inject("databaseUrl"));
    url.pathname = `/tenantry_platform_${randomBytes(4).toString("hex")}`;
    await Promise.all([ensurePlatformDatabase(url.toString()), ensurePlatformDatabase(url.toString())]);
    const log = createLogger("test", "silent");
    const orms = await Promise.all([1, 2, 3].map(() => createPlatformOrm(url.toString(), log)));
    try {
      const applied = await Promise.all(orms.map((orm) => migratePlatformDatabase(orm, url.toString())));
      const names = migrations.map((m) => m.name);
      // One of them applied everything; the others found nothing left to do.
      expect(applied.map((a) => a.length).sort()).toEqual([0, 0, names.length]);
      expect(applied.find((a) => a.length > 0)).toEqual(names);
      const client = new pg.Client(url.toString());
      await client.connect();
      try {
        const { rows } = await client.query<{ name: string }>("select name from platform.mikro_orm_migrations order by id");
        expect(rows.map((r) => r.name)).toEqual(names);
      } finally {
        await client.end();
      }
    } finally {
      await Promise.all(orms.map((orm) => orm.close()));
    }
  });

  it("closes while a query is still connecting, failing that query rather than waiting on its connection for good", async () => {
    const log = createLogger("test", "silent");
    const orm = await createPlatformOrm(inject("databaseUrl"), log);
    const pool = await orm.em.getConnection().getNativeClient();
    const query = orm.em
      .getConnection()
      .execute("select 1 as one")
      .then(() => undefined, (error: unknown) => error);
    // The pool has begun a connection for the query; close before it is made.
    while (pool.totalCount === 0) {
      await sleep(0);
    }
    const closing = orm.close();
    const outcome = await Promise.race([closing.then(() => "closed"), sleep(15_000).then(() => "still closing")]);
    expect(outcome).toBe("closed");
    expect(await query).toMatchObject({ message: expect.stringMatching(/destroyed/) });
    expect(pool.totalCount).toBe(0);
  });
});
