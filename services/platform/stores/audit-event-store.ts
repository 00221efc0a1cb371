import type { EntityManager } from "@mikro-orm/postgresql";
import { pageOf, readPage } from "../../mesh/index.ts";
import { AuditEvent } from "../entities/audit-event.ts";

/** How an audit event spells the way its action ended. */
export const auditOutcomes = { succeeded: "succeeded", failed: "failed" } as const;

export type AuditOutcomeName = (typeof auditOutcomes)[keyof typeof auditOutcomes];

/** One action to record. */
export interface NewAuditEvent {
  actor: string;
  action: string;
  tenantId?: string | undefined;
  outcome: AuditOutcomeName;
  detail?: Record<string, unknown>;
}

/** Records one action, as having happened now. */
export async function appendAuditEvent(em: EntityManager, event: NewAuditEvent): Promise<void> {
  em.create(AuditEvent, {
    occurredAt: new Date(),
    actor: event.actor,
    action: event.action,
    tenantId: event.tenantId ?? null,
    outcome: event.outcome,
    detail: event.detail ?? {},
  });
  await em.flush();
}

/** Events, newest first, optionally of one tenant, a page at a time. */
export async function listAuditEvents(
  em: EntityManager,
  request: { tenantId: string; pageSize: number; pageToken: string },
): Promise<{ events: AuditEvent[]; nextPageToken: string }> {
  // A page ends at an event id.
  const { size, after: before } = readPage(request, (value): value is number => Number.isSafeInteger(value) && (value as number) > 0);
  const where = {
    ...(request.tenantId === "" ? {} : { tenantId: request.tenantId }),
    ...(before === undefined ? {} : { id: { $lt: before } }),
  };
  const rows = await em.find(AuditEvent, where, { orderBy: { id: "desc" }, limit: size + 1 });
  const page = pageOf(rows, size, (last) => last.id);
  return { events: page.items, nextPageToken: page.nextPageToken };
}
