import { fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import type { EntityManager } from "@mikro-orm/postgresql";
import { PermissionSchema } from "../../../gen/tenantry/options/v1/access_pb.js";
import type { Permission } from "../../mesh/index.ts";

/** What a data-owning service says of itself (DescribeSchema) that Platform works from. */
export interface SchemaDescription {
  /** Its newest migration. */
  latestVersion: string;
  /** The permissions it declares. */
  permissions: Permission[];
}

/** What a data-owning service said about its schema when last asked. */
export interface SchemaServiceRecord extends SchemaDescription {
  name: string;
  address: string;
  migrations: string[];
}

/** Keeps what a data-owning service said about its schema, replacing what it said before. */
export async function recordSchemaService(em: EntityManager, service: SchemaServiceRecord): Promise<void> {
  await em.execute(
    `insert into platform.schema_services (name, address, latest_version, migrations, permissions, updated_at) values (?, ?, ?, ?, ?, now())
     on conflict (name) do update set address = excluded.address, latest_version = excluded.latest_version,
       migrations = excluded.migrations, permissions = excluded.permissions, updated_at = now()`,
    [service.name, service.address, service.latestVersion, JSON.stringify(service.migrations), JSON.stringify(service.permissions.map((p) => toJson(PermissionSchema, p)))],
  );
}

/** What each data-owning service said of itself when last asked, by service name. */
export async function recordedSchemaServices(em: EntityManager): Promise<Map<string, SchemaDescription>> {
  const rows = await em.execute<{ name: string; latest_version: string; permissions: JsonValue[] }[]>("select name, latest_version, permissions from platform.schema_services");
  return new Map(rows.map((row) => [row.name, { latestVersion: row.latest_version, permissions: row.permissions.map((p) => fromJson(PermissionSchema, p)) }]));
}
