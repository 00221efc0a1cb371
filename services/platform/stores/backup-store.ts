import { Code, ConnectError } from "@connectrpc/connect";
import type { EntityManager } from "@mikro-orm/postgresql";
import { BackupState, VerifyResult } from "../../../gen/tenantry/platform/v1/backup_service_pb.js";
import { checkTenantId, checkUuid, isUuid, pageOf, readPage } from "../../mesh/index.ts";
import { Backup, type BackupTableRecord } from "../entities/backup.ts";
import { registrySpelling, servedStatuses } from "./tenant-store.ts";

const stateSpelling = registrySpelling<BackupState>(BackupState);
const verifySpelling = registrySpelling<VerifyResult>(VerifyResult);

/** The state the registry spells `name`; UNSPECIFIED for none. */
export const backupStateOf = stateSpelling.of;
/** The verify result the registry spells `name`; UNSPECIFIED for none. */
export const verifyResultOf = verifySpelling.of;

/** Each backup state as the registry spells it. */
export const backupStates = {
  running: stateSpelling.name(BackupState.RUNNING),
  succeeded: stateSpelling.name(BackupState.SUCCEEDED),
  failed: stateSpelling.name(BackupState.FAILED),
};

/** Each verify result as the registry spells it. */
export const verifyResults = {
  passed: verifySpelling.name(VerifyResult.PASSED),
  failed: verifySpelling.name(VerifyResult.FAILED),
};

/** A new backup's record, RUNNING from the start. */
export interface NewBackupRecord {
  id: string;
  tenantId: string;
  label: string;
  cluster: string;
  database: string;
}

/** Records a backup being taken. */
export async function insertBackup(em: EntityManager, record: NewBackupRecord): Promise<Backup> {
  const backup = em.create(Backup, { ...record, state: backupStates.running, error: null, sizeBytes: 0, tables: [], tableCount: 0, schemaVersions: {}, createdAt: new Date() });
  await em.flush();
  return backup;
}

/** What a running backup records as it goes, and how it ends. */
export type BackupChange = Partial<Pick<Backup, "state" | "error" | "sizeBytes" | "tables" | "tableCount" | "schemaVersions" | "finishedAt">>;

/** Changes a backup's record by id (no read needed, as progress is recorded often). */
export async function changeBackup(em: EntityManager, id: string, change: BackupChange): Promise<void> {
  await em.nativeUpdate(Backup, { id }, change);
}

/** A backup; NOT_FOUND when there is none by that id, INVALID_ARGUMENT for an id that is not a UUID. */
export async function getBackup(em: EntityManager, backupId: string): Promise<Backup> {
  const id = checkUuid(backupId, "backup_id");
  const backup = await em.findOne(Backup, { id });
  if (backup === null) {
    throw new ConnectError(`backup "${id}" not found`, Code.NotFound);
  }
  return backup;
}

/** Backups newest first, optionally of one tenant, one page at a time. */
export async function listBackups(em: EntityManager, request: { tenantId: string; pageSize: number; pageToken: string }): Promise<{ backups: Backup[]; nextPageToken: string }> {
  const tenantId = request.tenantId === "" ? undefined : checkTenantId(request.tenantId);
  // A page ends at a backup: its creation time and id.
  const isCursor = (value: unknown): value is [string, string] =>
    Array.isArray(value) && value.length === 2 && !Number.isNaN(Date.parse(String(value[0]))) && isUuid(String(value[1]));
  const { size, after } = readPage(request, isCursor);
  const where = {
    ...(tenantId === undefined ? {} : { tenantId }),
    ...(after === undefined ? {} : { $or: [{ createdAt: { $lt: new Date(after[0]) } }, { createdAt: new Date(after[0]), id: { $lt: after[1] } }] }),
  };
  const rows = await em.find(Backup, where, { orderBy: { createdAt: "desc", id: "desc" }, limit: size + 1 });
  const page = pageOf(rows, size, (last) => [last.createdAt.toISOString(), last.id]);
  return { backups: page.items, nextPageToken: page.nextPageToken };
}

/** The backups still RUNNING, oldest first. */
export function findRunningBackups(em: EntityManager): Promise<Backup[]> {
  return em.find(Backup, { state: backupStates.running }, { orderBy: { createdAt: "asc" } });
}

/** Forgets a backup (its files are gone). */
export async function deleteBackupRecord(em: EntityManager, id: string): Promise<void> {
  await em.nativeDelete(Backup, { id });
}

/** Records how verifying a backup ended. */
export async function recordVerification(em: EntityManager, id: string, outcome: { passed: boolean; error: string | null }): Promise<void> {
  await em.nativeUpdate(Backup, { id }, { verifiedAt: new Date(), verifyResult: outcome.passed ? verifyResults.passed : verifyResults.failed, verifyError: outcome.error });
}

/** Per tier, how old the served tenants' backups are: see {@link backupAgesByTier}. */
export interface TierBackupAges {
  /** ACTIVE and SUSPENDED tenants of the tier. */
  tenants: number;
  /** The largest age among them, in seconds; 0 when there are none. */
  oldest: number;
  /** For each bound (seconds), the tenants whose age is at most it, in the order given. */
  within: number[];
}

/**
 * The age of each ACTIVE or SUSPENDED tenant's newest SUCCEEDED backup
 * (seconds since it finished; a tenant never backed up counts from its
 * creation), aggregated per tier (by the registry's spelling): how many
 * tenants, the oldest age, and how many are within each of `bounds`.
 * Tiers without tenants are absent.
 */
export async function backupAgesByTier(em: EntityManager, bounds: number[]): Promise<Map<string, TierBackupAges>> {
  const rows = await em.execute<{ tier: string; bound: number; within: number; tenants: number; oldest: number }[]>(
    `with ages as (
       select t.tier, greatest(0, extract(epoch from now() - coalesce(max(b.finished_at), t.created_at)))::float8 as age
       from platform.tenants t
       left join platform.backups b on b.tenant_id = t.id and b.state = ?
       where t.status in (?)
       group by t.id, t.tier, t.created_at)
     select tier, bound, (count(*) filter (where age <= bound))::int as within, count(*)::int as tenants, max(age) as oldest
     from ages cross join unnest(array[?]::float8[]) as bound
     group by tier, bound
     order by tier, bound`,
    [backupStates.succeeded, servedStatuses, bounds],
  );
  const byTier = new Map<string, TierBackupAges>();
  for (const row of rows) {
    const ages = byTier.get(row.tier) ?? { tenants: row.tenants, oldest: Number(row.oldest), within: [] };
    ages.within.push(row.within);
    byTier.set(row.tier, ages);
  }
  return byTier;
}

/** Stored (SUCCEEDED) backups counted by their tenant's tier and last verification ("passed", "failed", or "never"), with their bytes. */
export async function countStoredBackups(em: EntityManager): Promise<{ tier: string; verify: string; backups: number; bytes: number }[]> {
  const rows = await em.execute<{ tier: string; verify: string; backups: number; bytes: string }[]>(
    `select t.tier, coalesce(b.verify_result, 'never') as verify, count(*)::int as backups, sum(b.size_bytes)::text as bytes
     from platform.backups b join platform.tenants t on t.id = b.tenant_id
     where b.state = ?
     group by t.tier, coalesce(b.verify_result, 'never')`,
    [backupStates.succeeded],
  );
  return rows.map((row) => ({ ...row, bytes: Number(row.bytes) }));
}

export type { BackupTableRecord };
