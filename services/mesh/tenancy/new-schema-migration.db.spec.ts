import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { Migration } from "@mikro-orm/migrations";
import type { MigrationObject } from "@mikro-orm/postgresql";
import { randomBytes } from "node:crypto";
import { afterAll, describe, expect, it } from "vitest";
import { Placement, TenantRouteSchema, TenantStatus, type TenantRoute } from "../../../gen/tenantry/platform/v1/platform_service_pb.js";
import { Entry } from "../../backend/entities/entry.ts";
import { migrations as backendMigrations } from "../../backend/migrations/index.ts";
import { newerBackendMigrations, upcomingBackendVersion } from "../../testing/newer-backend.ts";
import { TestServer } from "../../testing/test-server.ts";
import { createLogger } from "../telemetry/logger.ts";
import { Tenancy } from "./tenancy.ts";
import { TenantDirectory } from "./tenant-directory.ts";
import { WriteFreezes } from "./write-freezes.ts";

/**
 * A schema never migrated gets all its migrations in one round trip (see
 * `Tenancy.migrate`); these check that it ends as the Migrator leaves one,
 * and that a failure leaves nothing of the migrations behind.
 */
const server = new TestServer();
const suffix = randomBytes(3).toString("hex");
const databases: string[] = [];
const tenancies: Tenancy[] = [];

/** A migration that reads the database itself: such a list is migrated by MikroORM's Migrator, one statement at a time. */
class LookFirst extends Migration {
  override async up(): Promise<void> {
    await this.execute("select 1");
  }
}

/** A migration that fails: `entries` exists by then. */
class MakeEntriesAgain extends Migration {
  override up(): void {
    this.addSql("create table entries (id int)");
  }
}

/** A dedicated database of its own, made empty, and its route (the server's own login). */
async function newDatabase(name: string): Promise<TenantRoute> {
  const database = `tenantry_new_schema_${suffix}_${name}`;
  await server.sql("postgres", `create database ${database}`);
  databases.push(database);
  return create(TenantRouteSchema, {
    tenantId: `${name}-${suffix}`,
    status: TenantStatus.ACTIVE,
    host: server.url.hostname,
    port: Number(server.url.port),
    database,
    user: decodeURIComponent(server.url.username),
    password: decodeURIComponent(server.url.password),
    placement: Placement.DEDICATED,
  });
}

/** A Tenancy of Backend's entities with `migrations`, reaching `route` only. */
function tenancyOf(route: TenantRoute, migrations: MigrationObject[]): Tenancy {
  const tenancy = new Tenancy({
    schema: "backend",
    entities: [Entry],
    migrations,
    directory: new TenantDirectory({
      resolve: async (tenantId) => {
        if (tenantId !== route.tenantId) {
          throw new ConnectError(`tenant "${tenantId}" not found`, Code.NotFound);
        }
        return route;
      },
      maxEntries: 10,
      ttlMs: 60_000,
    }),
    freezes: new WriteFreezes({ maxHoldMs: 1000, acknowledge: async () => {}, log: createLogger("test", "silent") }),
    connections: { maxConnections: 2, maxConnectionsPerTenant: 2, acquireTimeoutMs: 30_000, idleTimeoutMs: 60_000, applicationName: `new-schema-test-${suffix}` },
    requestKey: randomBytes(32),
  });
  tenancies.push(tenancy);
  return tenancy;
}

/** Counts the leases `tenancy` takes of its connection budget from now on. */
function countLeases(tenancy: Tenancy): { count: number } {
  const leases = { count: 0 };
  const acquire = tenancy.budget.acquire.bind(tenancy.budget);
  tenancy.budget.acquire = (endpoint) => {
    leases.count++;
    return acquire(endpoint);
  };
  return leases;
}

/** Every column of the tables of schema `backend`, as PostgreSQL describes them. */
async function columnsOf(database: string) {
  return server.sql(
    database,
    `select table_name, column_name, data_type, character_maximum_length, datetime_precision, is_nullable,
            replace(column_default, table_schema || '.', '') as column_default
       from information_schema.columns where table_schema = 'backend' order by table_name, ordinal_position`,
  );
}

/** Every index and constraint of the tables of schema `backend`. */
async function indexesOf(database: string) {
  return server.sql(database, "select tablename, indexname, indexdef from pg_indexes where schemaname = 'backend' order by tablename, indexname");
}

afterAll(async () => {
  await Promise.all(tenancies.map((t) => t.close()));
  for (const database of databases) {
    await server.sql("postgres", `drop database if exists ${database} with (force)`);
  }
  await server.close();
});

describe("a schema never migrated", () => {
  it("ends, schema made, as the Migrator leaves one: the same tables, the migration table alike, each migration in it", async () => {
    const fresh = await newDatabase("fresh");
    const stepwise = await newDatabase("stepwise");
    const outcome = await tenancyOf(fresh, backendMigrations).migrate(fresh);
    expect(outcome).toEqual({ applied: backendMigrations.map((m) => m.name), version: backendMigrations.at(-1)!.name });
    const withLook = [{ name: "0000-look-first", class: LookFirst }, ...backendMigrations];
    expect((await tenancyOf(stepwise, withLook).migrate(stepwise)).applied).toEqual(withLook.map((m) => m.name));

    expect(await columnsOf(fresh.database)).toEqual(await columnsOf(stepwise.database));
    expect(await indexesOf(fresh.database)).toEqual(await indexesOf(stepwise.database));
    const tracked = await server.sql<{ id: number; name: string }>(fresh.database, "select id, name from backend.mikro_orm_migrations order by id");
    expect(tracked).toEqual(backendMigrations.map((m, i) => ({ id: i + 1, name: m.name })));
    // One transaction made them all, the migration table with them (the Migrator makes it in one of its own).
    const transactions = (database: string) => server.sql(database, "select count(distinct xmin::text)::int as n from pg_class where relnamespace = 'backend'::regnamespace and relkind = 'r'");
    expect(await transactions(fresh.database)).toEqual([{ n: 1 }]);
    expect((await transactions(stepwise.database))[0]!.n).toBeGreaterThan(1);
    // The Migrator, run again, finds nothing to do.
    expect(await tenancyOf(fresh, backendMigrations).migrate(fresh)).toEqual({ applied: [], version: backendMigrations.at(-1)!.name });
    expect(await tenancyOf(fresh, backendMigrations).schemaState(fresh)).toEqual({ version: backendMigrations.at(-1)!.name, latestVersion: backendMigrations.at(-1)!.name, pending: [] });
  });

  it("keeps nothing of its migrations when one fails, and takes them all once fixed", async () => {
    const route = await newDatabase("broken");
    const broken = [...backendMigrations, { name: "0003-make-entries-again", class: MakeEntriesAgain }];
    await expect(tenancyOf(route, broken).migrate(route)).rejects.toThrow(/entries/);
    // The Migrator, which reported the failure, makes its migration table inside the run's transaction: nothing at all is left.
    expect(await server.sql(route.database, "select table_name from information_schema.tables where table_schema = 'backend'")).toEqual([]);

    expect((await tenancyOf(route, backendMigrations).migrate(route)).applied).toEqual(backendMigrations.map((m) => m.name));
    expect((await server.sql<{ name: string }>(route.database, "select name from backend.mikro_orm_migrations order by id")).map((r) => r.name)).toEqual(backendMigrations.map((m) => m.name));
  });

  it("takes only the migrations up to the one asked for", async () => {
    const route = await newDatabase("partial");
    const first = backendMigrations[0]!.name;
    expect(await tenancyOf(route, backendMigrations).migrate(route, { to: first })).toEqual({ applied: [first], version: first });
    expect(await tenancyOf(route, backendMigrations).migrate(route)).toEqual({ applied: backendMigrations.slice(1).map((m) => m.name), version: backendMigrations.at(-1)!.name });
  });
});

describe("a schema migrated before", () => {
  it("gets the migrations it lacks in one query, and ends as the Migrator leaves one", async () => {
    const quick = await newDatabase("quick");
    const stepwise = await newDatabase("stepwise_tracked");
    for (const route of [quick, stepwise]) {
      await tenancyOf(route, backendMigrations).migrate(route);
    }
    const tenancy = tenancyOf(quick, newerBackendMigrations);
    const leases = countLeases(tenancy);
    expect(await tenancy.migrate(quick)).toEqual({ applied: [upcomingBackendVersion], version: upcomingBackendVersion });
    expect(leases.count).toBe(1);
    // A migration that reads the database itself has the Migrator run them all, one by one.
    const withLook = [...newerBackendMigrations, { name: "0099-look-first", class: LookFirst }];
    expect((await tenancyOf(stepwise, withLook).migrate(stepwise)).applied).toEqual([upcomingBackendVersion, "0099-look-first"]);

    expect(await columnsOf(quick.database)).toEqual(await columnsOf(stepwise.database));
    expect(await indexesOf(quick.database)).toEqual(await indexesOf(stepwise.database));
    const tracked = (database: string) => server.sql<{ id: number; name: string }>(database, "select id, name from backend.mikro_orm_migrations order by id");
    expect(await tracked(quick.database)).toEqual((await tracked(stepwise.database)).filter((row) => row.name !== "0099-look-first"));
    // Nothing more to do: the newest in the table, nothing applied.
    expect(await tenancy.migrate(quick)).toEqual({ applied: [], version: upcomingBackendVersion });
  });

  it("up to a migration, is checked by the Migrator for being past it", async () => {
    const route = await newDatabase("past");
    await tenancyOf(route, newerBackendMigrations).migrate(route);
    const released = backendMigrations.at(-1)!.name;
    await expect(tenancyOf(route, newerBackendMigrations).migrate(route, { to: released })).rejects.toThrow(new RegExp(`at "${upcomingBackendVersion}" already, past "${released}"`));
  });

  it("is looked at and migrated on one lease, and the lease comes back after", async () => {
    const route = await newDatabase("tracked");
    await tenancyOf(route, backendMigrations).migrate(route);
    const tenancy = tenancyOf(route, newerBackendMigrations);
    const leases = countLeases(tenancy);
    expect(await tenancy.migrate(route)).toEqual({ applied: [upcomingBackendVersion], version: upcomingBackendVersion });
    expect(leases.count).toBe(1);
    // Nothing to do: one lease again, given back.
    expect(await tenancy.migrate(route)).toEqual({ applied: [], version: upcomingBackendVersion });
    expect(leases.count).toBe(2);
    expect(tenancy.budget.stats()).toMatchObject({ inUse: 0, waiting: 0 });
  });

  it("gives the lease back when the run fails", async () => {
    const route = await newDatabase("tracked_broken");
    await tenancyOf(route, backendMigrations).migrate(route);
    const tenancy = tenancyOf(route, [...backendMigrations, { name: "0003-make-entries-again", class: MakeEntriesAgain }]);
    const leases = countLeases(tenancy);
    await expect(tenancy.migrate(route)).rejects.toThrow(/entries/);
    expect(leases.count).toBe(1);
    expect(tenancy.budget.stats()).toMatchObject({ inUse: 0, waiting: 0 });
    expect((await server.sql<{ name: string }>(route.database, "select name from backend.mikro_orm_migrations order by id")).map((r) => r.name)).toEqual(backendMigrations.map((m) => m.name));
  });
});
