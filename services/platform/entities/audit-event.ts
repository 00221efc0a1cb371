import { defineEntity, p, type InferEntity } from "@mikro-orm/core";

/** One recorded lifecycle action (`platform.audit_events`). */
export const AuditEvent = defineEntity({
  name: "AuditEvent",
  tableName: "audit_events",
  properties: {
    id: p.bigint("number").primary().autoincrement(),
    occurredAt: p.datetime(3),
    actor: p.string().length(100),
    action: p.string().length(50),
    tenantId: p.string().length(40).nullable(),
    /** "succeeded" or "failed". */
    outcome: p.string().length(20),
    detail: p.json<Record<string, unknown>>(),
  },
});

export type AuditEvent = InferEntity<typeof AuditEvent>;
