import { createWriteStream } from "node:fs";
import { mkdir, rename, rm } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import pg from "pg";
import Cursor from "pg-cursor";

/** What to export and where. */
export interface TenantExportRequest {
  tenantId: string;
  /** An open connection to the tenant's database, with the right to read every service schema. */
  client: pg.Client;
  /** The service schemas to export. */
  schemas: string[];
  /** The schema version of each service, from the ledger. */
  versions: Record<string, string>;
  /** The directory the export file goes into. */
  dir: string;
}

/** The first line of every export file. */
export const exportFormat = "tenantry-export/1";

/**
 * Writes a logical export of a tenant's service schemas as gzipped JSON
 * lines: a header (format, tenant, time, schema versions), then for each
 * table a line with its columns and types followed by one line per row
 * (`row_to_json`). Enough to recreate the tenant at those versions and load
 * its rows back. The file appears only once complete; returns its path.
 */
export async function exportTenant(request: TenantExportRequest): Promise<string> {
  await mkdir(request.dir, { recursive: true });
  const exportedAt = new Date();
  const file = path.join(request.dir, `${request.tenantId}-${exportedAt.toISOString().replaceAll(":", "")}.ndjson.gz`);
  const draft = `${file}.partial`;
  const { client } = request;

  async function* lines(): AsyncGenerator<string> {
    yield `${JSON.stringify({ format: exportFormat, tenantId: request.tenantId, exportedAt: exportedAt.toISOString(), versions: request.versions })}\n`;
    for (const schema of request.schemas) {
      const { rows: tables } = await client.query<{ tablename: string }>("select tablename from pg_tables where schemaname = $1 order by tablename", [schema]);
      for (const { tablename } of tables) {
        const { rows: columns } = await client.query<{ name: string; type: string }>(
          `select attname as name, format_type(atttypid, atttypmod) as type from pg_attribute
           where attrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass and attnum > 0 and not attisdropped order by attnum`,
          [schema, tablename],
        );
        const table = `${schema}.${tablename}`;
        yield `${JSON.stringify({ table, columns })}\n`;
        const cursor = client.query(new Cursor<{ row: string }>(`select row_to_json(t)::text as row from ${pg.escapeIdentifier(schema)}.${pg.escapeIdentifier(tablename)} t`));
        try {
          for (;;) {
            const batch = await cursor.read(500);
            if (batch.length === 0) {
              break;
            }
            yield batch.map((r) => `{"t":${JSON.stringify(table)},"row":${r.row}}\n`).join("");
          }
        } finally {
          await cursor.close();
        }
      }
    }
  }

  try {
    await pipeline(Readable.from(lines()), createGzip(), createWriteStream(draft, { mode: 0o600 }));
    await rename(draft, file);
  } catch (error) {
    await rm(draft, { force: true });
    throw error;
  }
  return file;
}
