import { randomBytes } from "node:crypto";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { listTables } from "../backups/index.ts";
import { TestServer } from "../../testing/test-server.ts";
import { copyInSnapshot } from "./snapshot-copy.ts";

const server = new TestServer();
const suffix = randomBytes(4).toString("hex");
const source = `snapshot_copy_source_${suffix}`;
const target = `snapshot_copy_target_${suffix}`;
const schema = `create schema app;
  create table app.parents (id int primary key, name text not null);
  create table app.children (id int primary key, parent_id int not null references app.parents (id), note text);
  create index children_parent on app.children (parent_id);
  create unique index parents_name on app.parents (lower(name));`;

/** Connections to both databases, ended after `fn`. */
async function withClients<T>(fn: (clients: { source: pg.Client; target: pg.Client; exporter: pg.Client }) => Promise<T>): Promise<T> {
  const clients = { source: new pg.Client(server.databaseUrl(source)), target: new pg.Client(server.databaseUrl(target)), exporter: new pg.Client(server.databaseUrl(source)) };
  try {
    await Promise.all(Object.values(clients).map((c) => c.connect()));
    return await fn(clients);
  } finally {
    await Promise.all(Object.values(clients).map((c) => c.end().catch(() => undefined)));
  }
}

/** Exports a snapshot of the source on `exporter`, which holds it until it ends. */
async function exportSnapshot(exporter: pg.Client): Promise<string> {
  await exporter.query("begin isolation level repeatable read");
  return (await exporter.query<{ snapshot: string }>("select pg_export_snapshot() as snapshot")).rows[0]!.snapshot;
}

/** Indexes and constraints of the target's tables, by name. */
async function keysOfTarget(): Promise<string[]> {
  const rows = await server.sql<{ name: string }>(
    target,
    "select indexname as name from pg_indexes where schemaname = 'app' union all select conname from pg_constraint where connamespace = 'app'::regnamespace order by 1",
  );
  return rows.map((r) => r.name);
}

beforeAll(async () => {
  await server.sql("postgres", `create database ${source}`);
  await server.sql("postgres", `create database ${target}`);
  await server.sql(source, schema);
  await server.sql(target, schema);
  await server.sql(source, "insert into app.parents select g, 'parent ' || g from generate_series(1, 500) g");
  await server.sql(source, "insert into app.children select g, 1 + g % 500, repeat('n', g % 50) from generate_series(1, 3000) g");
});
afterAll(async () => {
  await server.sql("postgres", `drop database if exists ${source} with (force)`);
  await server.sql("postgres", `drop database if exists ${target} with (force)`);
  await server.close();
});

describe("a copy in a snapshot", () => {
  it("loads the target with what the snapshot saw, not what was written after, and rebuilds its keys and indexes", async () => {
    const keys = await keysOfTarget();
    await server.sql(target, "insert into app.parents values (9999, 'only on the target')");
    const counts: number[] = [];
    const figures = await withClients(async ({ source: from, target: into, exporter }) => {
      const snapshot = await exportSnapshot(exporter);
      await server.sql(source, "insert into app.parents values (501, 'after the snapshot')");
      const tables = await listTables(from, ["app"]);
      return copyInSnapshot({ source: from, target: into, snapshot, tables, schemas: ["app"], bytesPerSecond: 0, copied: async (n) => void counts.push(n), signal: new AbortController().signal });
    });
    expect(counts).toEqual([1, 2]);
    expect(figures.bytes).toBeGreaterThan(0);
    expect(await server.sql(target, "select (select count(*)::int from app.parents) as parents, (select count(*)::int from app.children) as children")).toEqual([{ parents: 500, children: 3000 }]);
    expect(await keysOfTarget()).toEqual(keys);
    const failure = await server.sql(target, "insert into app.children values (4000, 12345, 'no such parent')").catch((error: { code: string }) => error.code);
    expect(failure).toBe("23503");
  });

  it("stops when its signal aborts, and leaves the target's tables as they were once its connections end", async () => {
    await server.sql(target, "truncate app.children, app.parents");
    await server.sql(target, "insert into app.parents values (1, 'kept')");
    const keys = await keysOfTarget();
    const stopped = new AbortController();
    stopped.abort();
    const error = await withClients(async ({ source: from, target: into, exporter }) => {
      const snapshot = await exportSnapshot(exporter);
      const tables = await listTables(from, ["app"]);
      return copyInSnapshot({ source: from, target: into, snapshot, tables, schemas: ["app"], bytesPerSecond: 0, copied: async () => {}, signal: stopped.signal }).catch((e: Error) => e);
    });
    expect(error).toMatchObject({ name: "AbortError" });
    expect(await server.sql(target, "select id, name from app.parents")).toEqual([{ id: 1, name: "kept" }]);
    expect(await keysOfTarget()).toEqual(keys);
  });
});
