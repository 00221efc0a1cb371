import { randomBytes } from "node:crypto";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { prepareParameterizedQueries } from "./prepared-statements.ts";

const url = inject("databaseUrl");
const table = `prepared_${randomBytes(4).toString("hex")}`;
let admin: pg.Client;
let client: pg.Client;

/** The statements the client's connection has prepared, as PostgreSQL lists them. */
async function preparedTexts(): Promise<string[]> {
  const { rows } = await client.query<{ statement: string }>("select statement from pg_prepared_statements order by prepare_time");
  return rows.map((r) => r.statement);
}

beforeAll(async () => {
  admin = new pg.Client({ connectionString: url });
  await admin.connect();
  await admin.query(`create table ${table} (id int primary key, name text)`);
  await admin.query(`insert into ${table} values (1, 'one'), (2, 'two')`);
  client = new pg.Client({ connectionString: url });
  prepareParameterizedQueries(client);
  await client.connect();
});
afterAll(async () => {
  await client?.end();
  await admin?.query(`drop table if exists ${table}`);
  await admin?.end();
});

describe("prepared statements", () => {
  it("prepare a parameterized query once per connection and reuse it", async () => {
    const select = `select * from ${table} where id = $1`;
    expect((await client.query(select, [1])).rows).toEqual([{ id: 1, name: "one" }]);
    expect((await client.query(select, [2])).rows).toEqual([{ id: 2, name: "two" }]);
    expect(await preparedTexts()).toEqual([select]);
  });

  it("leave queries without values unprepared", async () => {
    const before = await preparedTexts();
    expect((await client.query(`select name from ${table} where id = 1`)).rows).toEqual([{ name: "one" }]);
    expect((await client.query(`select name from ${table} where id = 2`, [])).rows).toEqual([{ name: "two" }]);
    expect(await preparedTexts()).toEqual(before);
  });

  it("prepare a statement again once a migration has changed what it returns", async () => {
    const select = `select * from ${table} where id = $1`;
    await client.query(select, [1]);
    await admin.query(`alter table ${table} add column note text default 'added'`);
    expect((await client.query(select, [1])).rows).toEqual([{ id: 1, name: "one", note: "added" }]);
    expect((await client.query(select, [2])).rows).toEqual([{ id: 2, name: "two", note: "added" }]);
  });

  it("report a query's own errors as they are", async () => {
    await expect(client.query(`select * from ${table} where id = $1`, ["not a number"])).rejects.toMatchObject({ code: "22P02" });
    await expect(client.query(`select * from missing_${table} where id = $1`, [1])).rejects.toMatchObject({ code: "42P01" });
    expect((await client.query(`select name from ${table} where id = $1`, [2])).rows).toEqual([{ name: "two" }]);
  });
});
