import { defineEntity, p, type InferEntity } from "@mikro-orm/core";

/** One item of a tenant's domain data, in the `entries` table of the tenant's Backend schema. */
export const Entry = defineEntity({
  name: "Entry",
  tableName: "entries",
  properties: {
    id: p.uuid().primary(),
    title: p.string().length(200),
    body: p.text(),
    tags: p.array(),
    /** Bumped on every update; the entry's etag, and the optimistic lock of a flush. */
    version: p.integer().version(),
    createdAt: p.datetime(3),
    updatedAt: p.datetime(3),
  },
});

export type Entry = InferEntity<typeof Entry>;
