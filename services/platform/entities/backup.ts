import { defineEntity, p, type InferEntity } from "@mikro-orm/core";

/** One table of a backup as recorded: its name, rows and the SHA-256 of its COPY stream. */
export interface BackupTableRecord {
  name: string;
  rows: number;
  sha256: string;
}

/** A backup of a tenant (`platform.backups`); its files are in backup storage. State and verify result are the enum names, lower-case. */
export const Backup = defineEntity({
  name: "Backup",
  tableName: "backups",
  properties: {
    id: p.uuid().primary(),
    tenantId: p.string().length(40),
    label: p.string().length(200),
    state: p.string().length(20),
    error: p.text().nullable(),
    /** Where it was read from. */
    cluster: p.string().length(40),
    database: p.string().length(63),
    sizeBytes: p.bigint("number"),
    /** The tables stored so far, in the backup's order. */
    tables: p.json<BackupTableRecord[]>(),
    /** How many tables it holds in all, once the snapshot is taken. */
    tableCount: p.integer().default(0),
    /** The version of each service's schema, once the snapshot is taken. */
    schemaVersions: p.json<Record<string, string>>(),
    createdAt: p.datetime(3),
    /** The slot of the backup schedule it was taken for (when that slot began); null for one taken on request or by offboarding. */
    scheduledFor: p.datetime(3).nullable(),
    finishedAt: p.datetime(3).nullable(),
    verifiedAt: p.datetime(3).nullable(),
    verifyResult: p.string().length(20).nullable(),
    verifyError: p.text().nullable(),
  },
});

export type Backup = InferEntity<typeof Backup>;
