import { Code, ConnectError } from "@connectrpc/connect";

/** Metadata key carrying the tenant of a call. */
export const tenantIdHeader = "x-tenant-id";

const tenantIdPattern = /^[a-z][a-z0-9-]{1,38}[a-z0-9]$/;

/** True when `id` is a well-formed tenant id. */
export function isTenantId(id: string): boolean {
  return tenantIdPattern.test(id);
}

/**
 * Returns `id` when it is a well-formed tenant id, else throws
 * INVALID_ARGUMENT. Everything that names a database or a role from a tenant
 * id goes through here first.
 */
export function checkTenantId(id: string | null | undefined, where = "tenant_id"): string {
  if (id === null || id === undefined || id === "") {
    throw new ConnectError(`missing ${where}: it must name the tenant`, Code.InvalidArgument);
  }
  if (!isTenantId(id)) {
    const shown = id.length > 60 ? `${id.slice(0, 60)}…` : id;
    throw new ConnectError(
      `malformed ${where} ${JSON.stringify(shown)}: use 3 to 40 lower-case letters, digits and hyphens, starting with a letter and not ending with a hyphen`,
      Code.InvalidArgument,
    );
  }
  return id;
}

/** The name of a tenant's database. */
export function tenantDatabaseName(tenantId: string): string {
  return `tenant_${checkTenantId(tenantId).replaceAll("-", "_")}`;
}
