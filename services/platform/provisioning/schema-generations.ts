import pg from "pg";
import type { ClusterRegistry } from "../cluster-registry.ts";

/**
 * A pooled tenant's schemas in its pool database, as generations: the
 * first is named with the tenant's base prefix (`t_<id>_auth`), the n-th
 * with `<base>r<n>__` (`t_<id>_r2__auth`). An in-place restore loads a new
 * generation beside the one serving and switches the tenant's prefix to it.
 * No other tenant's prefix is a generation prefix: a tenant's base prefix
 * ends in a letter or digit and one `_`, a later generation's in `__`.
 */
export interface PooledSchemas {
  cluster: string;
  /** The pool database. */
  database: string;
  /** The tenant's role, which owns every generation. */
  role: string;
  /** The tenant's base prefix (`pooledSchemaPrefix`). */
  base: string;
}

/** The prefix of a generation: the base for the first. */
export function generationPrefix(base: string, generation: number): string {
  return generation === 1 ? base : `${base}r${generation}__`;
}

/** The generation a schema of the tenant belongs to; undefined for a name not of its base. */
export function generationOf(schema: string, base: string): number | undefined {
  if (!schema.startsWith(base)) {
    return undefined;
  }
  const later = /^r([0-9]+)__/.exec(schema.slice(base.length));
  return later === null ? 1 : Number(later[1]);
}

/** The tenant's role's schemas in its pool database, by name. */
async function ownedSchemas(clusters: ClusterRegistry, schemas: PooledSchemas): Promise<string[]> {
  const present = await clusters.admin(schemas.cluster, (admin) => admin.query("select 1 from pg_database where datname = $1", [schemas.database]));
  if (present.rowCount === 0) {
    return [];
  }
  return clusters.inDatabase(schemas.cluster, schemas.database, async (client) => {
    const { rows } = await client.query<{ schema: string }>(
      "select nspname as schema from pg_namespace where nspowner = (select oid from pg_roles where rolname = $1) order by 1",
      [schemas.role],
    );
    return rows.map((r) => r.schema);
  });
}

/**
 * The prefix of the first generation that neither serves (`current`) nor
 * has a schema in the pool database: bounded by the generations kept.
 */
export async function freeGeneration(clusters: ClusterRegistry, schemas: PooledSchemas, current: string): Promise<string> {
  const taken = new Set((await ownedSchemas(clusters, schemas)).map((s) => generationOf(s, schemas.base)));
  taken.add(generationOf(current, schemas.base) ?? 1);
  let generation = 1;
  while (taken.has(generation)) {
    generation++;
  }
  return generationPrefix(schemas.base, generation);
}

/** The schemas of the generation of `prefix` the tenant's role owns. */
export async function schemasOfGeneration(clusters: ClusterRegistry, schemas: PooledSchemas, prefix: string): Promise<string[]> {
  const generation = generationOf(prefix, schemas.base);
  return (await ownedSchemas(clusters, schemas)).filter((s) => generation !== undefined && generationOf(s, schemas.base) === generation);
}

/** Drops the generation of `prefix` (its schemas the tenant's role owns, with everything in them); nothing when it is gone. */
export async function dropGeneration(clusters: ClusterRegistry, schemas: PooledSchemas, prefix: string): Promise<void> {
  const names = await schemasOfGeneration(clusters, schemas, prefix);
  if (names.length === 0) {
    return;
  }
  await clusters.inDatabase(schemas.cluster, schemas.database, (client) => client.query(names.map((s) => `drop schema if exists ${pg.escapeIdentifier(s)} cascade`).join(";\n")));
}

/**
 * Lets the tenant's role use the generation of `prefix` again, or stops it:
 * the role's own privileges on those schemas are revoked (as the superuser
 * may), so that a session of a stale route fails rather than writes there,
 * and the tenant's sessions in the pool database (application_name ending
 * in `@<tenant id>`) end, so that none holds the generation's tables.
 */
export async function allowGeneration(clusters: ClusterRegistry, schemas: PooledSchemas & { tenantId: string }, prefix: string, allow: boolean): Promise<void> {
  const names = await schemasOfGeneration(clusters, schemas, prefix);
  if (names.length > 0) {
    const list = names.map((s) => pg.escapeIdentifier(s)).join(", ");
    const role = pg.escapeIdentifier(schemas.role);
    await clusters.inDatabase(schemas.cluster, schemas.database, (client) => client.query(allow ? `grant usage, create on schema ${list} to ${role}` : `revoke usage, create on schema ${list} from ${role}`));
  }
  if (!allow) {
    await clusters.admin(schemas.cluster, (admin) =>
      admin.query("select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and application_name like $2", [schemas.database, `%@${schemas.tenantId}`]),
    );
  }
}
