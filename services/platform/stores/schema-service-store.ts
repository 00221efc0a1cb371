import type { EntityManager } from "@mikro-orm/postgresql";

/** What a data-owning service said about its schema when last asked. */
export interface SchemaServiceRecord {
  name: string;
  address: string;
  latestVersion: string;
  migrations: string[];
}

/** Keeps what a data-owning service said about its schema, replacing what it said before. */
export async function recordSchemaService(em: EntityManager, service: SchemaServiceRecord): Promise<void> {
  await em.execute(
    `insert into platform.schema_services (name, address, latest_version, migrations, updated_at) values (?, ?, ?, ?, now())
     on conflict (name) do update set address = excluded.address, latest_version = excluded.latest_version,
       migrations = excluded.migrations, updated_at = now()`,
    [service.name, service.address, service.latestVersion, JSON.stringify(service.migrations)],
  );
}

/** The newest version each data-owning service reported when last asked, by service name. */
export async function recordedLatestVersions(em: EntityManager): Promise<Map<string, string>> {
  const rows = await em.execute<{ name: string; latest_version: string }[]>("select name, latest_version from platform.schema_services");
  return new Map(rows.map((row) => [row.name, row.latest_version]));
}
