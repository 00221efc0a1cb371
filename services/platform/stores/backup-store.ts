import { Code, ConnectError } from "@connectrpc/connect";
import type { EntityManager } from "@mikro-orm/postgresql";
import { BackupState, VerifyResult } from "../../../gen/tenantry/platform/v1/backup_service_pb.js";
import { checkUuid } from "../../mesh/index.ts";
import { Backup, type BackupTableRecord } from "../entities/backup.ts";
import { restoreStates } from "./restore-store.ts";
import { pageNewestFirst } from "./newest-first.ts";
import { registrySpelling, servedStatuses, statusNames } from "./tenant-store.ts";

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
  /** The slot of the schedule it is taken for; null for one taken on request or by offboarding. */
  scheduledFor: Date | null;
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
  const page = await pageNewestFirst(em, Backup, request);
  return { backups: page.items, nextPageToken: page.nextPageToken };
}

/** The backups still RUNNING, of one tenant or of all, oldest first. */
export function findRunningBackups(em: EntityManager, tenantId?: string): Promise<Backup[]> {
  return em.find(Backup, { state: backupStates.running, ...(tenantId === undefined ? {} : { tenantId }) }, { orderBy: { createdAt: "asc" } });
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

/** A tenant a schedule's slot still has to back up. */
export interface DueTenant {
  id: string;
  cluster: string;
}

/**
 * The ACTIVE and SUSPENDED tenants of a tier, made before the slot began,
 * that have no backup for the slot SUCCEEDED or RUNNING, and fewer than
 * `attempts` FAILED: what the slot has left to do, by id.
 */
export function findDueTenants(em: EntityManager, slot: { tier: string; start: Date; attempts: number }): Promise<DueTenant[]> {
  return em.execute<DueTenant[]>(
    `select t.id, t.cluster from platform.tenants t
     where t.status in (?) and t.tier = ? and t.created_at <= ? and t.cluster is not null
       and not exists (select 1 from platform.backups b where b.tenant_id = t.id and b.scheduled_for = ? and b.state in (?, ?))
       and (select count(*) from platform.backups b where b.tenant_id = t.id and b.scheduled_for = ? and b.state = ?) < ?
     order by t.id`,
    [servedStatuses, slot.tier, slot.start, slot.start, backupStates.succeeded, backupStates.running, slot.start, backupStates.failed, slot.attempts],
  );
}

/** A SUCCEEDED backup of a schedule's slot, as a sample of verification drills is drawn from them. */
export interface SlotBackup {
  id: string;
  tenantId: string;
  cluster: string;
  /** When this backup was verified; null if never. */
  verifiedAt: Date | null;
  /** When any backup of its tenant was last verified; null if never. */
  tenantVerifiedAt: Date | null;
}

/** The SUCCEEDED backups a schedule took for the slot that began at `start`. */
export async function findSlotBackups(em: EntityManager, start: Date): Promise<SlotBackup[]> {
  const rows = await em.execute<(Omit<SlotBackup, "verifiedAt" | "tenantVerifiedAt"> & { verifiedAt: string | null; tenantVerifiedAt: string | null })[]>(
    `select b.id, b.tenant_id as "tenantId", b.cluster, b.verified_at as "verifiedAt",
       (select max(v.verified_at) from platform.backups v where v.tenant_id = b.tenant_id) as "tenantVerifiedAt"
     from platform.backups b where b.scheduled_for = ? and b.state = ? order by b.tenant_id`,
    [start, backupStates.succeeded],
  );
  // Raw rows carry timestamps as text.
  const date = (value: string | null) => (value === null ? null : new Date(value));
  return rows.map((row) => ({ ...row, verifiedAt: date(row.verifiedAt), tenantVerifiedAt: date(row.tenantVerifiedAt) }));
}

/** What retention keeps of each tenant's backups. */
export interface RetentionPolicy {
  /** The tenant's newest SUCCEEDED backups kept whatever their age (while the tenant is not DELETED). */
  keepLast: number;
  /** Every backup taken after this is kept. */
  keepAfter: Date;
}

/**
 * The ended backups retention no longer keeps, oldest first: taken before
 * `keepAfter`, and FAILED, or SUCCEEDED but not among the tenant's last
 * `keepLast` SUCCEEDED ones, or of a tenant that is DELETED (or gone).
 */
export function findExpiredBackups(em: EntityManager, policy: RetentionPolicy): Promise<Pick<Backup, "id" | "tenantId" | "state">[]> {
  return em.execute<Pick<Backup, "id" | "tenantId" | "state">[]>(
    `select id, tenant_id as "tenantId", state from (
       select b.id, b.tenant_id, b.state, b.created_at, coalesce(t.status, ?) as tenant_status,
         row_number() over (partition by b.tenant_id, b.state order by b.created_at desc, b.id desc) as nth
       from platform.backups b left join platform.tenants t on t.id = b.tenant_id
       where b.state <> ? and b.tenant_id in (select tenant_id from platform.backups where created_at < ? and state <> ?)
     ) ranked
     where created_at < ? and (state <> ? or nth > ? or tenant_status = ?)
     order by created_at`,
    [statusNames.deleted, backupStates.running, policy.keepAfter, backupStates.running, policy.keepAfter, backupStates.succeeded, policy.keepLast, statusNames.deleted],
  );
}

/**
 * Forgets an ended backup that no restore or drill is using, and runs
 * `removeFiles` before that is committed (a failure keeps the record);
 * returns whether it did. A restore that starts meanwhile finds the backup
 * gone and fails, leaving nothing.
 */
export async function deleteUnusedBackup(em: EntityManager, id: string, removeFiles: () => Promise<void>): Promise<boolean> {
  return em.transactional(async (tx) => {
    const deleted = await tx.execute<{ id: string }[]>(
      `delete from platform.backups b where b.id = ? and b.state <> ?
         and not exists (select 1 from platform.restores r where r.backup_id = b.id and r.state = ?)
       returning b.id`,
      [id, backupStates.running, restoreStates.running],
    );
    if (deleted.length === 0) {
      return false;
    }
    await removeFiles();
    return true;
  });
}
