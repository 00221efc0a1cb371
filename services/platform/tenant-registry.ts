import { Code, ConnectError } from "@connectrpc/connect";
import type { EntityManager } from "@mikro-orm/postgresql";
import { checkTenantId } from "../mesh/index.ts";
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
  if (request.pageSize < 0) {
    throw new ConnectError("page_size cannot be negative", Code.InvalidArgument);
  }
  const size = Math.min(request.pageSize || 50, 500);
  let after: string | undefined;
  if (request.pageToken !== "") {
    after = Buffer.from(request.pageToken, "base64url").toString("utf8");
    if (!/^[a-z][a-z0-9-]{1,38}[a-z0-9]$/.test(after)) {
      throw new ConnectError("malformed page_token: pass the next_page_token of the previous page", Code.InvalidArgument);
    }
  }
  const rows = await em.find(Tenant, after === undefined ? {} : { id: { $gt: after } }, { orderBy: { id: "asc" }, limit: size + 1 });
  const tenants = rows.slice(0, size);
  const last = tenants.at(-1);
  return {
    tenants,
    nextPageToken: rows.length > size && last !== undefined ? Buffer.from(last.id).toString("base64url") : "",
  };
}
