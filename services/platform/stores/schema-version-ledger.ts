import type { EntityManager } from "@mikro-orm/postgresql";
import { placementNames, servedStatuses } from "./tenant-store.ts";

/**
 * How the ledger spells the outcome of a tenant × service's last migration
 * attempt. A `failed` entry keeps the version the schema still has.
 */
export const ledgerStates = { succeeded: "succeeded", failed: "failed" } as const;

/** One tenant × service of the ledger. */
export interface LedgerEntry {
  version: string;
  /** One of {@link ledgerStates}. */
  state: string;
  /** For Auth: the digest of the permission catalog last merged into the tenant's; null when none is recorded. */
  permissionsDigest: string | null;
}

/**
 * The service that keeps tenants' permission catalogs (Auth), and the
 * digest of the catalog every tenant should have merged: an entry of that
 * service with another digest (or none) is behind, whatever its version.
 */
export interface CatalogMark {
  service: string;
  digest: string;
}

/** Whether a ledger entry is at `latest` and, for the catalog's service, holds the current catalog. */
export function isCurrent(service: string, entry: LedgerEntry | undefined, latest: string | undefined, catalog: CatalogMark | undefined): boolean {
  return (
    entry !== undefined &&
    entry.state === ledgerStates.succeeded &&
    entry.version === latest &&
    (catalog?.service !== service || entry.permissionsDigest === catalog.digest)
  );
}

/** How many served tenants each service's schema has current, behind or failed. */
export interface SchemaStateCounts {
  current: number;
  behind: number;
  failed: number;
}

/** A tenant × service whose last migration failed. */
export interface FailedMigration {
  tenantId: string;
  version: string;
  error: string;
  attempts: number;
  attemptedAt: Date;
}

/**
 * Records that a service migrated a tenant's schema to `version` (and, with
 * `permissionsDigest`, merged that catalog into the tenant's). The attempt
 * counts on from earlier ones, unless it is a new tenant's first.
 */
export async function recordMigrated(
  em: EntityManager,
  entry: { tenantId: string; service: string; version: string; permissionsDigest?: string },
  options: { firstAttempt?: boolean } = {},
): Promise<void> {
  await em.execute(
    `insert into platform.tenant_schema_versions (tenant_id, service, version, status, error, attempts, attempted_at, updated_at, permissions_digest)
     values (?, ?, ?, ?, null, 1, now(), now(), ?)
     on conflict (tenant_id, service) do update set version = excluded.version, status = excluded.status, error = null,
       attempts = case when ? then 1 else platform.tenant_schema_versions.attempts + 1 end, attempted_at = now(), updated_at = now(),
       permissions_digest = coalesce(excluded.permissions_digest, platform.tenant_schema_versions.permissions_digest)`,
    [entry.tenantId, entry.service, entry.version, ledgerStates.succeeded, entry.permissionsDigest ?? null, options.firstAttempt === true],
  );
}

/**
 * {@link recordMigrated} for many tenant × service pairs in one statement
 * (each pair at most once), none a new tenant's first attempt.
 */
export async function recordManyMigrated(em: EntityManager, entries: { tenantId: string; service: string; version: string; permissionsDigest?: string }[]): Promise<void> {
  if (entries.length === 0) {
    return;
  }
  const rows = entries.map((e) => ({ tenant_id: e.tenantId, service: e.service, version: e.version, permissions_digest: e.permissionsDigest ?? null }));
  await em.execute(
    `insert into platform.tenant_schema_versions (tenant_id, service, version, status, error, attempts, attempted_at, updated_at, permissions_digest)
     select r.tenant_id, r.service, r.version, ?, null, 1, now(), now(), r.permissions_digest
     from jsonb_to_recordset(?::jsonb) as r(tenant_id text, service text, version text, permissions_digest text)
     on conflict (tenant_id, service) do update set version = excluded.version, status = excluded.status, error = null,
       attempts = platform.tenant_schema_versions.attempts + 1, attempted_at = now(), updated_at = now(),
       permissions_digest = coalesce(excluded.permissions_digest, platform.tenant_schema_versions.permissions_digest)`,
    [ledgerStates.succeeded, JSON.stringify(rows)],
  );
}

/** Records that a service (Auth) merged the catalog of `permissionsDigest` into a tenant's, outside a migration (bootstrap). */
export async function recordPermissionsMerged(em: EntityManager, entry: { tenantId: string; service: string; permissionsDigest: string }): Promise<void> {
  await em.execute("update platform.tenant_schema_versions set permissions_digest = ?, updated_at = now() where tenant_id = ? and service = ?", [
    entry.permissionsDigest,
    entry.tenantId,
    entry.service,
  ]);
}

/** Records that migrating a tenant's schema failed; `version` is the one it still has. */
export async function recordMigrationFailure(em: EntityManager, entry: { tenantId: string; service: string; version: string; error: string }): Promise<void> {
  await em.execute(
    `insert into platform.tenant_schema_versions (tenant_id, service, version, status, error, attempts, attempted_at, updated_at)
     values (?, ?, ?, ?, ?, 1, now(), now())
     on conflict (tenant_id, service) do update set status = excluded.status, error = excluded.error,
       attempts = platform.tenant_schema_versions.attempts + 1, attempted_at = now()`,
    [entry.tenantId, entry.service, entry.version, ledgerStates.failed, entry.error],
  );
}

/** The version each service reported for a tenant, by service. */
export async function versionsOf(em: EntityManager, tenantId: string): Promise<Record<string, string>> {
  const rows = await em.execute<{ service: string; version: string }[]>("select service, version from platform.tenant_schema_versions where tenant_id = ?", [tenantId]);
  return Object.fromEntries(rows.map((row) => [row.service, row.version]));
}

/** Forgets a tenant's versions (its schemas are gone). */
export async function forgetVersions(em: EntityManager, tenantId: string): Promise<void> {
  await em.execute("delete from platform.tenant_schema_versions where tenant_id = ?", [tenantId]);
}

/** A tenant as a fleet migration plans it: where it is, and its ledger's entries by service. */
export interface LedgerTenant {
  cluster: string;
  /** A pooled tenant's pool database; undefined for a dedicated tenant. */
  poolDatabase?: string;
  entries: Map<string, LedgerEntry>;
}

/**
 * The ledger of the served tenants (see {@link servedStatuses}), optionally
 * narrowed to some ids, a tier or a cluster: each tenant's cluster (and
 * pool database) and its entries by service, by tenant id in order. A
 * tenant without entries is there with none.
 */
export async function ledgerOfServedTenants(
  em: EntityManager,
  filter: { tenantIds: string[]; tier: string | undefined; cluster: string },
): Promise<Map<string, LedgerTenant>> {
  const conditions = ["t.status in (?)"];
  const values: unknown[] = [servedStatuses];
  if (filter.tenantIds.length > 0) {
    conditions.push("t.id in (?)");
    values.push(filter.tenantIds);
  }
  if (filter.tier !== undefined) {
    conditions.push("t.tier = ?");
    values.push(filter.tier);
  }
  if (filter.cluster !== "") {
    conditions.push("t.cluster = ?");
    values.push(filter.cluster);
  }
  const rows = await em.execute<
    { id: string; cluster: string; placement: string; database: string; service: string | null; version: string | null; status: string | null; permissions_digest: string | null }[]
  >(
    `select t.id, t.cluster, t.placement, t.database, l.service, l.version, l.status, l.permissions_digest
     from platform.tenants t left join platform.tenant_schema_versions l on l.tenant_id = t.id
     where ${conditions.join(" and ")} order by t.id`,
    values,
  );
  const byTenant = new Map<string, LedgerTenant>();
  for (const row of rows) {
    const tenant = byTenant.get(row.id) ?? { cluster: row.cluster, ...(row.placement === placementNames.pooled ? { poolDatabase: row.database } : {}), entries: new Map() };
    byTenant.set(row.id, tenant);
    if (row.service !== null) {
      tenant.entries.set(row.service, { version: row.version ?? "", state: row.status ?? "", permissionsDigest: row.permissions_digest });
    }
  }
  return byTenant;
}

/**
 * For each service of `latest` (service → its newest version), how many
 * served tenants have its schema current, behind (or never migrated) or
 * failed, by service. With `catalog`, that service's tenants are current
 * only with the current catalog merged (see {@link isCurrent}).
 */
export async function countSchemaStates(em: EntityManager, latest: Map<string, string>, catalog?: CatalogMark): Promise<Map<string, SchemaStateCounts>> {
  const targets = [...latest].map(([service, version]) => ({ service, version, digest: service === catalog?.service ? catalog.digest : null }));
  const atTarget = "l.version = s.version and (s.digest is null or l.permissions_digest is not distinct from s.digest)";
  const rows = await em.execute<({ service: string } & SchemaStateCounts)[]>(
    `select s.service,
            count(t.id) filter (where l.status = ? and ${atTarget})::int as current,
            count(t.id) filter (where l.status is null or (l.status = ? and not (${atTarget})))::int as behind,
            count(t.id) filter (where l.status = ?)::int as failed
     from jsonb_to_recordset(?::jsonb) as s(service text, version text, digest text)
     left join platform.tenants t on t.status in (?)
     left join platform.tenant_schema_versions l on l.tenant_id = t.id and l.service = s.service
     group by s.service`,
    [ledgerStates.succeeded, ledgerStates.succeeded, ledgerStates.failed, JSON.stringify(targets), servedStatuses],
  );
  return new Map(rows.map(({ service, ...counts }) => [service, counts]));
}

/** The last `limit` failed migrations of a service's schema on served tenants, newest first. */
export async function failedMigrations(em: EntityManager, service: string, limit: number): Promise<FailedMigration[]> {
  const rows = await em.execute<{ tenant_id: string; version: string; error: string | null; attempts: number; attempted_at: string | Date }[]>(
    `select l.tenant_id, l.version, l.error, l.attempts, l.attempted_at from platform.tenant_schema_versions l
     join platform.tenants t on t.id = l.tenant_id and t.status in (?)
     where l.service = ? and l.status = ? order by l.attempted_at desc limit ?`,
    [servedStatuses, service, ledgerStates.failed, limit],
  );
  return rows.map((row) => ({ tenantId: row.tenant_id, version: row.version, error: row.error ?? "", attempts: row.attempts, attemptedAt: new Date(row.attempted_at) }));
}
