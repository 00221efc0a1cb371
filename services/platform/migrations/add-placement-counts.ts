import { Migration } from "@mikro-orm/migrations";

/**
 * How many tenants take up a place on each cluster and in each pool
 * database, kept by a trigger on `platform.tenants` rather than counted at
 * every placement: placing a tenant (under the "placement" lock, which
 * every CreateTenant takes) counted every tenant of the fleet, twice, and
 * so grew slower as the fleet grew.
 *
 * A row per place: a cluster's dedicated tenants together (`database` '')
 * and each of its pool databases (`database` its name). A tenant counts
 * while it has a cluster and is neither failed nor deleted, as the queries
 * this replaces counted. A change moving a tenant between two places
 * updates the smaller key first, so that two transactions changing one
 * tenant each never wait on each other in a cycle.
 */
export class AddPlacementCounts extends Migration {
  override up(): void {
    this.addSql(`create table platform.placement_counts (
      cluster varchar(40) not null,
      placement varchar(20) not null,
      database varchar(63) not null,
      tenants integer not null,
      primary key (cluster, placement, database)
    )`);
    this.addSql(`create function platform.count_placed_tenants() returns trigger language plpgsql as $$
      declare
        before_key text[];
        after_key text[];
        first_key text[];
        second_key text[];
        first_delta integer;
        second_delta integer;
      begin
        if tg_op <> 'INSERT' and old.cluster is not null and old.status not in ('failed', 'deleted') then
          before_key := array[old.cluster, old.placement, case when old.placement = 'pooled' then old.database else '' end];
        end if;
        if tg_op <> 'DELETE' and new.cluster is not null and new.status not in ('failed', 'deleted') then
          after_key := array[new.cluster, new.placement, case when new.placement = 'pooled' then new.database else '' end];
        end if;
        if before_key is not distinct from after_key then
          return null;
        end if;
        if after_key is null or (before_key is not null and before_key < after_key) then
          first_key := before_key; first_delta := -1; second_key := after_key; second_delta := 1;
        else
          first_key := after_key; first_delta := 1; second_key := before_key; second_delta := -1;
        end if;
        insert into platform.placement_counts as c (cluster, placement, database, tenants)
          values (first_key[1], first_key[2], first_key[3], first_delta)
          on conflict (cluster, placement, database) do update set tenants = c.tenants + excluded.tenants;
        if second_key is not null then
          insert into platform.placement_counts as c (cluster, placement, database, tenants)
            values (second_key[1], second_key[2], second_key[3], second_delta)
            on conflict (cluster, placement, database) do update set tenants = c.tenants + excluded.tenants;
        end if;
        return null;
      end
    $$`);
    // No tenant changes between the count and the trigger taking over.
    this.addSql("lock table platform.tenants in share row exclusive mode");
    this.addSql(`insert into platform.placement_counts (cluster, placement, database, tenants)
      select cluster, placement, case when placement = 'pooled' then database else '' end, count(*)
        from platform.tenants where cluster is not null and status not in ('failed', 'deleted')
        group by 1, 2, 3`);
    this.addSql(`create trigger tenants_placement_counts
      after insert or delete or update of cluster, placement, database, status on platform.tenants
      for each row execute function platform.count_placed_tenants()`);
  }
}
