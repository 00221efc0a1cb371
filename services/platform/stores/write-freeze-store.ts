import type { EntityManager } from "@mikro-orm/postgresql";

/** A service instance's acknowledgement of a write freeze. */
export interface WriteFreezeAcknowledgementRecord {
  service: string;
  instanceId: string;
  acknowledgedAt: Date;
}

/** A write freeze of a tenant, as recorded. */
export interface WriteFreezeRecord {
  tenantId: string;
  freezeId: string;
  actor: string;
  createdAt: Date;
  /** When it ends by itself (its time to live). */
  expiresAt: Date;
  /** When its lease runs out unless renewed. */
  leaseUntil: Date;
  /** When every service instance watching had acknowledged it. */
  acknowledgedAt: Date | null;
  acknowledgements: WriteFreezeAcknowledgementRecord[];
}

interface FreezeRow {
  tenant_id: string;
  freeze_id: string;
  actor: string;
  created_at: Date;
  expires_at: Date;
  lease_until: Date;
  acknowledged_at: Date | null;
  acknowledgements: { service: string; instance_id: string; acknowledged_at: string }[] | null;
}

const freezeColumns = `f.tenant_id, f.freeze_id, f.actor, f.created_at, f.expires_at, f.lease_until, f.acknowledged_at,
  (select jsonb_agg(jsonb_build_object('service', a.service, 'instance_id', a.instance_id, 'acknowledged_at', a.acknowledged_at) order by a.acknowledged_at, a.instance_id)
     from platform.write_freeze_acknowledgements a where a.freeze_id = f.freeze_id) as acknowledgements`;

function freezeRecord(row: FreezeRow): WriteFreezeRecord {
  return {
    tenantId: row.tenant_id,
    freezeId: row.freeze_id,
    actor: row.actor,
    createdAt: new Date(row.created_at),
    expiresAt: new Date(row.expires_at),
    leaseUntil: new Date(row.lease_until),
    acknowledgedAt: row.acknowledged_at === null ? null : new Date(row.acknowledged_at),
    acknowledgements: (row.acknowledgements ?? []).map((a) => ({ service: a.service, instanceId: a.instance_id, acknowledgedAt: new Date(a.acknowledged_at) })),
  };
}

/**
 * Records a new freeze of a tenant, its lease running `leaseMs` and its
 * life `ttlMs` from now, unless a freeze of the tenant is in force (then
 * null). A freeze whose lease ran out (its Platform stopped) is replaced.
 * Run it in a transaction.
 */
export async function insertWriteFreeze(
  em: EntityManager,
  freeze: { tenantId: string; freezeId: string; actor: string; ttlMs: number; leaseMs: number },
): Promise<WriteFreezeRecord | null> {
  await em.execute("delete from platform.write_freezes where tenant_id = ? and lease_until <= now()", [freeze.tenantId]);
  const inserted = await em.execute<{ freeze_id: string }[]>(
    `insert into platform.write_freezes (tenant_id, freeze_id, actor, created_at, expires_at, lease_until)
     values (?, ?, ?, now(), now() + ? * interval '1 millisecond', now() + ? * interval '1 millisecond')
     on conflict (tenant_id) do nothing
     returning freeze_id`,
    [freeze.tenantId, freeze.freezeId, freeze.actor, freeze.ttlMs, Math.min(freeze.leaseMs, freeze.ttlMs)],
  );
  return inserted.length === 0 ? null : findWriteFreeze(em, freeze.tenantId);
}

/** The freeze of a tenant in force (its lease has not run out), or null. */
export async function findWriteFreeze(em: EntityManager, tenantId: string): Promise<WriteFreezeRecord | null> {
  const rows = await em.execute<FreezeRow[]>(`select ${freezeColumns} from platform.write_freezes f where f.tenant_id = ? and f.lease_until > now()`, [tenantId]);
  return rows[0] === undefined ? null : freezeRecord(rows[0]);
}

/** The freezes in force, ordered by tenant id. */
export async function listWriteFreezes(em: EntityManager): Promise<WriteFreezeRecord[]> {
  const rows = await em.execute<FreezeRow[]>(`select ${freezeColumns} from platform.write_freezes f where f.lease_until > now() order by f.tenant_id`);
  return rows.map(freezeRecord);
}

/** Each freeze in force with how long its lease has left, in milliseconds. */
export async function writeFreezeLeases(em: EntityManager): Promise<{ tenantId: string; freezeId: string; leaseMs: number }[]> {
  const rows = await em.execute<{ tenant_id: string; freeze_id: string; lease_ms: string }[]>(
    `select tenant_id, freeze_id, ceil(extract(epoch from lease_until - now()) * 1000) as lease_ms
     from platform.write_freezes where lease_until > now() order by tenant_id`,
  );
  return rows.map((r) => ({ tenantId: r.tenant_id, freezeId: r.freeze_id, leaseMs: Number(r.lease_ms) }));
}

/**
 * Extends a freeze's lease to `leaseMs` from now, never past its end.
 * Returns how long the lease has left, or null when the freeze has ended
 * (thawed, or past its end).
 */
export async function renewWriteFreeze(em: EntityManager, freezeId: string, leaseMs: number): Promise<{ tenantId: string; leaseMs: number } | null> {
  const rows = await em.execute<{ tenant_id: string; lease_ms: string }[]>(
    `update platform.write_freezes set lease_until = least(now() + ? * interval '1 millisecond', expires_at)
     where freeze_id = ? and lease_until > now() and expires_at > now()
     returning tenant_id, ceil(extract(epoch from lease_until - now()) * 1000) as lease_ms`,
    [leaseMs, freezeId],
  );
  const row = rows[0];
  return row === undefined ? null : { tenantId: row.tenant_id, leaseMs: Number(row.lease_ms) };
}

/** Removes a tenant's freeze (only `freezeId`, when given), in force or not; returns what was removed, or null. */
export async function deleteWriteFreeze(em: EntityManager, tenantId: string, freezeId?: string): Promise<WriteFreezeRecord | null> {
  const rows = await em.execute<FreezeRow[]>(
    `select ${freezeColumns} from platform.write_freezes f where f.tenant_id = ?${freezeId === undefined ? "" : " and f.freeze_id = ?"} for update`,
    freezeId === undefined ? [tenantId] : [tenantId, freezeId],
  );
  if (rows[0] === undefined) {
    return null;
  }
  await em.execute("delete from platform.write_freezes where freeze_id = ?", [rows[0].freeze_id]);
  return freezeRecord(rows[0]);
}

/** Marks a freeze acknowledged by every service instance watching. */
export async function markWriteFreezeAcknowledged(em: EntityManager, freezeId: string): Promise<void> {
  await em.execute("update platform.write_freezes set acknowledged_at = now() where freeze_id = ?", [freezeId]);
}

/** Records a service instance's acknowledgement of a freeze in force; returns false when the freeze is not in force. */
export async function recordWriteFreezeAcknowledgement(
  em: EntityManager,
  ack: { tenantId: string; freezeId: string; instanceId: string; service: string },
): Promise<boolean> {
  const rows = await em.execute<{ freeze_id: string }[]>(
    `with frozen as (select freeze_id from platform.write_freezes where freeze_id = ? and tenant_id = ? and lease_until > now()),
     recorded as (
       insert into platform.write_freeze_acknowledgements (freeze_id, instance_id, service, acknowledged_at)
       select freeze_id, ?, ?, now() from frozen
       on conflict (freeze_id, instance_id) do nothing)
     select freeze_id from frozen`,
    [ack.freezeId, ack.tenantId, ack.instanceId, ack.service],
  );
  return rows.length > 0;
}

/** Records that service instances watch the change feed now. */
export async function touchFeedWatchers(em: EntityManager, watchers: { instanceId: string; service: string }[]): Promise<void> {
  if (watchers.length === 0) {
    return;
  }
  await em.execute(
    `insert into platform.feed_watchers (instance_id, service, seen_at)
     select w.instance_id, w.service, now() from jsonb_to_recordset(?::jsonb) as w (instance_id uuid, service text)
     on conflict (instance_id) do update set service = excluded.service, seen_at = excluded.seen_at`,
    [JSON.stringify(watchers.map((w) => ({ instance_id: w.instanceId, service: w.service })))],
  );
}

/** Forgets watchers not seen for `ms`. */
export async function forgetFeedWatchers(em: EntityManager, ms: number): Promise<void> {
  await em.execute("delete from platform.feed_watchers where seen_at < now() - ? * interval '1 millisecond'", [ms]);
}

/** The service instances seen watching the change feed within `liveMs` that have not acknowledged a freeze. */
export async function unacknowledgedWatchers(em: EntityManager, freezeId: string, liveMs: number): Promise<{ instanceId: string; service: string }[]> {
  const rows = await em.execute<{ instance_id: string; service: string }[]>(
    `select w.instance_id, w.service from platform.feed_watchers w
     where w.seen_at > now() - ? * interval '1 millisecond'
       and not exists (select 1 from platform.write_freeze_acknowledgements a where a.freeze_id = ? and a.instance_id = w.instance_id)
     order by w.service, w.instance_id`,
    [liveMs, freezeId],
  );
  return rows.map((r) => ({ instanceId: r.instance_id, service: r.service }));
}
