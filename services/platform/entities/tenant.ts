import { defineEntity, p, type InferEntity } from "@mikro-orm/core";

/** A tenant in the registry (`platform.tenants`). Tier and status are the enum names, lower-case. */
export const Tenant = defineEntity({
  name: "Tenant",
  tableName: "tenants",
  properties: {
    id: p.string().primary().length(40),
    displayName: p.string().length(200),
    tier: p.string().length(20),
    status: p.string().length(20),
    /** Its database: its own (dedicated), or the pool database holding its schemas (pooled; empty until one is chosen). */
    database: p.string().length(63),
    /** "dedicated" (a database of its own) or "pooled" (schemas of its own in a pool database). */
    placement: p.string().length(20).default("dedicated"),
    /** Prefix of its schemas' names: a service's schema is this followed by the service's name; empty for dedicated tenants. */
    schemaPrefix: p.string().length(48).default(""),
    error: p.text().nullable(),
    cluster: p.string().length(40).nullable(),
    /** The tenant's role: dedicated, its login, owning the database and everything in it; pooled, a NOLOGIN role owning its schemas. */
    role: p.string().length(63).nullable(),
    /** The role's password, sealed with the master key; null for pooled tenants, whose role does not log in. */
    rolePassword: p.blob().nullable(),
    /**
     * The last step done of the transition under way: provisioning
     * ("rollback" once undoing it) or offboarding.
     */
    lifecycleStep: p.string().length(30).nullable(),
    /** How many times provisioning was started. */
    attempts: p.integer().default(0),
    suspendedReason: p.text().nullable(),
    /** While OFFBOARDING: when the database and role may be dropped. */
    purgeAfter: p.datetime(3).nullable(),
    /** The export file written when offboarding, by Platforms before final backups. */
    exportPath: p.text().nullable(),
    /** Offboarding's final backup: chosen before it is taken, so that a resumed offboarding finds it. */
    finalBackupId: p.uuid().nullable(),
    /** The owner asked for; Auth creates it while provisioning. */
    ownerEmail: p.string().length(320).nullable(),
    /** The owner's password, sealed, until the owner exists. */
    ownerPassword: p.blob().nullable(),
    createdAt: p.datetime(3),
    updatedAt: p.datetime(3),
  },
});

export type Tenant = InferEntity<typeof Tenant>;
