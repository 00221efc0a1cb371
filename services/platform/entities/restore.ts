import { defineEntity, p, type InferEntity } from "@mikro-orm/core";

/**
 * A restore of a backup (`platform.restores`): in place, as a clone, or a
 * verification drill into a scratch database; the last step done, so that
 * a Platform that stops anywhere goes on from there.
 */
export const Restore = defineEntity({
  name: "Restore",
  tableName: "restores",
  properties: {
    id: p.uuid().primary(),
    backupId: p.uuid(),
    /** "in_place", "clone" or "verify". */
    kind: p.string().length(20),
    /** The tenant restored into or made; for a drill, the backup's tenant. */
    tenantId: p.string().length(40),
    /** The tenant the backup was taken of. */
    sourceTenantId: p.string().length(40),
    state: p.string().length(20),
    /** The last step done. */
    step: p.string().length(40).nullable(),
    /** While an in-place restore is undone: the last step of the undo done. */
    undoStep: p.string().length(40).nullable(),
    error: p.text().nullable(),
    /** The cluster and database restored into. */
    cluster: p.string().length(40),
    database: p.string().length(63),
    /** In place: the database the restored one replaces (a pooled tenant's: its pool database, as `database`). */
    previousDatabase: p.string().length(63).nullable(),
    /** The placement restored into: "dedicated" (a database of its own) or "pooled" (schemas in `database`, a pool database). */
    placement: p.string().length(20).default("dedicated"),
    /** Pooled: the prefix of the schemas restored into; empty for a dedicated restore. */
    schemaPrefix: p.string().length(48).default(""),
    /** Pooled, in place: the prefix of the schemas the restored ones replace. */
    previousSchemaPrefix: p.string().length(48).nullable(),
    /** In place: the tenant's status before it was suspended for the switch. */
    previousStatus: p.string().length(20).nullable(),
    /** A drill's scratch role, and its password sealed with the master key. */
    role: p.string().length(63).nullable(),
    rolePassword: p.blob().nullable(),
    /** In place: until when the replaced database is kept for an undo. */
    keepUntil: p.datetime(3).nullable(),
    /** In place: whether the replaced (or, once undone, the restored) database has been dropped. */
    previousDropped: p.boolean().default(false),
    createdAt: p.datetime(3),
    finishedAt: p.datetime(3).nullable(),
  },
});

export type Restore = InferEntity<typeof Restore>;
