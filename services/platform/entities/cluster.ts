import { defineEntity, p, type InferEntity } from "@mikro-orm/core";

/**
 * A PostgreSQL server holding tenant databases (`platform.clusters`). The
 * admin and template passwords are sealed with the master key.
 */
export const Cluster = defineEntity({
  name: "Cluster",
  tableName: "clusters",
  properties: {
    name: p.string().primary().length(40),
    host: p.string().length(255),
    port: p.integer(),
    adminUser: p.string().length(63),
    adminPassword: p.blob(),
    capacity: p.integer(),
    /** How many pooled tenants it may hold, counted apart from `capacity`. */
    poolCapacity: p.integer(),
    region: p.string().length(40),
    state: p.string().length(20),
    /** The login role's password of the cluster's template database, sealed; null until the template exists. */
    templatePassword: p.blob().nullable(),
    /** The version each service's schema has in the template database. */
    templateVersions: p.json<Record<string, string>>().nullable(),
    createdAt: p.datetime(3),
    updatedAt: p.datetime(3),
  },
});

export type Cluster = InferEntity<typeof Cluster>;
