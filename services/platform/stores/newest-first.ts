import type { EntityManager, EntityName, FilterQuery } from "@mikro-orm/postgresql";
import { checkTenantId, isUuid, pageOf, readPage } from "../../mesh/index.ts";

/** A record listed newest first: made at `createdAt`, named by a UUID, of a tenant. */
interface TenantRecord {
  id: string;
  createdAt: Date;
  tenantId: string;
}

/**
 * Records of `entity` newest first, optionally of one tenant, one page at a
 * time; a page ends at a record, its creation time and id.
 */
export async function pageNewestFirst<T extends TenantRecord>(
  em: EntityManager,
  entity: EntityName<T>,
  request: { tenantId: string; pageSize: number; pageToken: string },
): Promise<{ items: T[]; nextPageToken: string }> {
  const tenantId = request.tenantId === "" ? undefined : checkTenantId(request.tenantId);
  const isCursor = (value: unknown): value is [string, string] =>
    Array.isArray(value) && value.length === 2 && !Number.isNaN(Date.parse(String(value[0]))) && isUuid(String(value[1]));
  const { size, after } = readPage(request, isCursor);
  const where = {
    ...(tenantId === undefined ? {} : { tenantId }),
    ...(after === undefined ? {} : { $or: [{ createdAt: { $lt: new Date(after[0]) } }, { createdAt: new Date(after[0]), id: { $lt: after[1] } }] }),
  } as FilterQuery<T>;
  const rows = await em.find(entity, where, { orderBy: { createdAt: "desc", id: "desc" } as never, limit: size + 1 });
  return pageOf(rows, size, (last) => [last.createdAt.toISOString(), last.id]);
}
