import { Migrator } from "@mikro-orm/migrations";
import type { MikroORM } from "@mikro-orm/postgresql";
import { randomBytes } from "node:crypto";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { createLogger } from "../../mesh/index.ts";
import { listClusters, listPoolDatabases } from "./index.ts";
import { createPlatformOrm, ensurePlatformDatabase, migratePlatformDatabase } from "./platform-database.ts";

/** What the counters must say: the tenants counted, as placing them counted them before the counters. */
const counted = `select cluster, placement, case when placement = 'pooled' then database else '' end as database, count(*)::int as tenants
  from platform.tenants where cluster is not null and status not in ('failed', 'deleted') group by 1, 2, 3`;

describe("placement counts", () => {
  let url: string;
  let orm: MikroORM;
  let client: pg.Client;

  async function insertTenant(id: string, cluster: string | null, placement: string, database: string, status = "active"): Promise<void> {
    await client.query(
      `insert into platform.tenants (id, display_name, tier, status, database, cluster, role, placement, schema_prefix)
       values ($1, $1, 'standard', $2, $3, $4, $1, $5, '')`,
      [id, status, database, cluster, placement],
    );
  }

  /** The counters as kept, without the places whose count went back to 0. */
  async function kept(): Promise<string[]> {
    const { rows } = await client.query<{ cluster: string; placement: string; database: string; tenants: number }>(
      "select cluster, placement, database, tenants from platform.placement_counts where tenants <> 0",
    );
    return rows.map((r) => `${r.cluster}/${r.placement}/${r.database}=${r.tenants}`).sort();
  }

  async function recount(): Promise<string[]> {
    const { rows } = await client.query<{ cluster: string; placement: string; database: string; tenants: number }>(counted);
    return rows.map((r) => `${r.cluster}/${r.placement}/${r.database}=${r.tenants}`).sort();
  }

  beforeAll(async () => {
    const base = new URL(inject("databaseUrl"));
    base.pathname = `/tenantry_platform_${randomBytes(4).toString("hex")}`;
    url = base.toString();
    await ensurePlatformDatabase(url);
    orm = await createPlatformOrm(url, createLogger("test", "silent"));
    // The registry as it was before the counters, with tenants in it already.
    await new Migrator(orm.em.fork()).up({ to: "0016-remove-full-pool-state" });
    client = new pg.Client(url);
    await client.connect();
    for (const name of ["east", "west"]) {
      await client.query(
        `insert into platform.clusters (name, host, port, admin_user, admin_password, capacity, pool_capacity)
         values ($1, 'localhost', 5432, 'postgres', '\\x00', 100, 1000)`,
        [name],
      );
      for (const pool of ["pool_1", "pool_2"]) {
        await client.query("insert into platform.pool_databases (cluster, name, role, role_password, state, created_at) values ($1, $2, $2, '\\x00', 'ready', now())", [
          name,
          pool,
        ]);
      }
    }
    await insertTenant("a1", "east", "pooled", "pool_1");
    await insertTenant("a2", "east", "pooled", "pool_1");
    await insertTenant("a3", "east", "pooled", "pool_2", "provisioning");
    await insertTenant("a4", "east", "pooled", "pool_2", "failed");
    await insertTenant("a5", "east", "dedicated", "tenant_a5");
    await insertTenant("a6", "west", "dedicated", "tenant_a6", "suspended");
    await insertTenant("a7", "west", "dedicated", "tenant_a7", "deleted");
    await insertTenant("a8", null, "dedicated", "tenant_a8", "provisioning");
  });

  afterAll(async () => {
    await client?.end();
    await orm?.close();
  });

  it("starts from the tenants the registry holds when it is migrated", async () => {
    expect(await migratePlatformDatabase(orm, url)).toEqual(["0017-add-placement-counts"]);
    expect(await kept()).toEqual(["east/dedicated/=1", "east/pooled/pool_1=2", "east/pooled/pool_2=1", "west/dedicated/=1"]);
    expect(await kept()).toEqual(await recount());
  });

  it("follows every change of a tenant's place or status, as counting them would say", async () => {
    const changes = [
      "insert into platform.tenants (id, display_name, tier, status, database, cluster, role, placement, schema_prefix) values ('b1', 'b1', 'standard', 'provisioning', 'pool_2', 'west', 'b1', 'pooled', '')",
      // Failed and retried, deleted, moved between pool databases, clusters and placements, given a cluster.
      "update platform.tenants set status = 'failed' where id = 'a3'",
      "update platform.tenants set status = 'provisioning' where id = 'a4'",
      "update platform.tenants set status = 'deleted' where id = 'a6'",
      "update platform.tenants set database = 'pool_2' where id = 'a1'",
      "update platform.tenants set cluster = 'west' where id = 'a2'",
      "update platform.tenants set placement = 'dedicated', database = 'tenant_a1' where id = 'a1'",
      "update platform.tenants set placement = 'pooled', database = 'pool_1', cluster = 'west' where id = 'a5'",
      "update platform.tenants set cluster = 'east' where id = 'a8'",
      // A change of nothing that counts, and one of something else.
      "update platform.tenants set status = 'suspended' where id = 'a5'",
      "update platform.tenants set display_name = 'renamed', database = database where id = 'a2'",
      "delete from platform.tenants where id = 'b1'",
      "delete from platform.tenants where id = 'a7'",
    ];
    for (const change of changes) {
      await client.query(change);
      expect({ change, counts: await kept() }).toEqual({ change, counts: await recount() });
    }
    // What placing a tenant reads: each pool database's tenants, and each cluster's by placement.
    const em = orm.em.fork();
    expect((await listPoolDatabases(em, "west")).map((p) => `${p.name}=${p.tenantCount}`)).toEqual(["pool_1=2", "pool_2=0"]);
    expect((await listClusters(em)).map(({ cluster, tenantCount, pooledCount }) => `${cluster.name} ${tenantCount}/${pooledCount}`)).toEqual(["east 2/1", "west 0/2"]);
  });

  it("lets a tenant moving between two places and a change in each of them both commit, without a deadlock", async () => {
    await insertTenant("c1", "east", "pooled", "pool_1");
    await insertTenant("c2", "west", "pooled", "pool_2");
    await insertTenant("c3", "west", "pooled", "pool_2");
    const first = new pg.Client(url);
    const second = new pg.Client(url);
    await Promise.all([first.connect(), second.connect()]);
    try {
      const secondPid = (await second.query<{ pid: number }>("select pg_backend_pid() as pid")).rows[0]!.pid;
      await first.query("begin");
      await second.query("begin");
      // The first holds east/pool_1's counter; the second moves c3 from west/pool_2 to it, and waits.
      await first.query("update platform.tenants set status = 'failed' where id = 'c1'");
      const moving = second.query("update platform.tenants set cluster = 'east', database = 'pool_1' where id = 'c3'").then(
        () => second.query("commit"),
        (error: unknown) => error,
      );
      for (let waiting = false; !waiting; ) {
        const { rows } = await client.query<{ waiting: boolean }>("select pg_blocking_pids($1)::int[] <> '{}' as waiting", [secondPid]);
        waiting = rows[0]!.waiting;
      }
      // Had the move taken west/pool_2's counter before waiting, this would wait on it: a deadlock.
      await first.query("update platform.tenants set status = 'failed' where id = 'c2'");
      await first.query("commit");
      const moved = await moving;
      expect(moved).not.toBeInstanceOf(Error);
    } finally {
      await Promise.all([first.end(), second.end()]);
    }
    expect(await kept()).toEqual(await recount());
    const { rows } = await client.query<{ id: string; status: string; database: string }>("select id, status, database from platform.tenants where id in ('c1', 'c2', 'c3') order by id");
    expect(rows).toEqual([
      { id: "c1", status: "failed", database: "pool_1" },
      { id: "c2", status: "failed", database: "pool_2" },
      { id: "c3", status: "active", database: "pool_1" },
    ]);
  });
});
