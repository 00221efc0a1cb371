import { Code, ConnectError } from "@connectrpc/connect";
import type { EntityManager } from "@mikro-orm/postgresql";
import { checkTenantId, isTenantId, pageOf, readPage } from "../mesh/index.ts";
import { Tenant } from "./entities/tenant.ts";

/** Returns a tenant, or NOT_FOUND. */
export async function getTenant(em: EntityManager, tenantId: string): Promise<Tenant> {
  const id = checkTenantId(tenantId);
  const tenant = await em.findOne(Tenant, { id });
  if (tenant === null) {
    throw new ConnectError(`tenant "${id}" not found`, Code.NotFound);
  }
  return tenant;
}

/** Lists tenants ordered by id, one page at a time. */
export async function listTenants(
  em: EntityManager,
  request: { pageSize: number; pageToken: string },
): Promise<{ tenants: Tenant[]; nextPageToken: string }> {
  // A page ends at a tenant id.
  const { size, after } = readPage(request, (value): value is string => typeof value === "string" && isTenantId(value));
  const rows = await em.find(Tenant, after === undefined ? {} : { id: { $gt: after } }, { orderBy: { id: "asc" }, limit: size + 1 });
  const page = pageOf(rows, size, (last) => last.id);
  return { tenants: page.items, nextPageToken: page.nextPageToken };
}
