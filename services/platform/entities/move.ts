import { defineEntity, p, type InferEntity } from "@mikro-orm/core";

/**
 * A move of a tenant's database to another cluster (`platform.moves`): the
 * last step done, so that a Platform that stops anywhere goes on from
 * there, and what the steps made, so that a rollback removes just that.
 */
export const Move = defineEntity({
  name: "Move",
  tableName: "moves",
  properties: {
    id: p.uuid().primary(),
    tenantId: p.string().length(40),
    /** "online" or "copy_under_freeze". */
    mode: p.string().length(20),
    state: p.string().length(20),
    /** The last step done. */
    step: p.string().length(40),
    error: p.text().nullable(),
    sourceCluster: p.string().length(40),
    sourceDatabase: p.string().length(63),
    targetCluster: p.string().length(40),
    targetDatabase: p.string().length(63),
    /** Whether the tenant's role existed on the target before the move (it is then not dropped on a rollback); null until looked at. */
    targetRoleExisted: p.boolean().nullable(),
    compareDigests: p.boolean().default(false),
    /** Copy under freeze: the backup the copy was taken as. */
    backupId: p.uuid().nullable(),
    tablesCopied: p.integer().default(0),
    tableCount: p.integer().default(0),
    /** How long the tenant's writes were frozen for the cutover. */
    freezeMs: p.integer().nullable(),
    createdAt: p.datetime(3),
    switchedAt: p.datetime(3).nullable(),
    finishedAt: p.datetime(3).nullable(),
    /** Once succeeded: until when the source database is kept, closed. */
    keepUntil: p.datetime(3).nullable(),
    sourceDropped: p.boolean().default(false),
    /** The tenant's placement at the source: "dedicated" or "pooled". */
    sourcePlacement: p.string().length(20).default("dedicated"),
    /** Its placement once moved. */
    targetPlacement: p.string().length(20).default("dedicated"),
    /** The prefix of the services' schemas at the source ("" for their names alone). */
    sourceSchemaPrefix: p.string().length(48).default(""),
    /** The prefix of the services' schemas on the target ("" for their names alone). */
    targetSchemaPrefix: p.string().length(48).default(""),
    /** A promotion: the password of the login the tenant's role gets on the target, sealed as a tenant's role password; the tenant's record takes it at the switch. */
    targetRolePassword: p.blob().nullable(),
  },
});

export type Move = InferEntity<typeof Move>;
