import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { DefaultRole, PermissionSchema } from "../../gen/tenantry/options/v1/access_pb.js";
import { meshCatalogOf, permissionCatalogOf } from "./permission-catalog.ts";

const permission = (name: string, description = name, defaultRoles: DefaultRole[] = []) => create(PermissionSchema, { name, description, defaultRoles });
const auth = { permissions: [permission("users.read"), permission("users.write")] };
const backend = { permissions: [permission("entries.read", "read entries", [DefaultRole.VIEWER])] };

describe("permission catalog", () => {
  it("holds every service's declarations once, services in the registry's order", () => {
    const billing = { permissions: [permission("invoices.read"), permission("entries.read", "read entries and invoices")] };
    const catalog = permissionCatalogOf([auth, backend, billing]);
    expect(catalog.permissions.map((p) => `${p.name}: ${p.description}`)).toEqual([
      "users.read: users.read",
      "users.write: users.write",
      "entries.read: read entries",
      "invoices.read: invoices.read",
    ]);
  });

  it("has a digest that changes with what a tenant's catalog would hold, and only with that", () => {
    const { digest } = permissionCatalogOf([auth, backend]);
    expect(permissionCatalogOf([backend, auth]).digest).toBe(digest);
    // Default roles matter only when a permission first reaches a tenant: no tenant's catalog changes.
    expect(permissionCatalogOf([auth, { permissions: [permission("entries.read", "read entries", [DefaultRole.ADMIN])] }]).digest).toBe(digest);
    expect(permissionCatalogOf([auth, { permissions: [permission("entries.read", "see entries")] }]).digest).not.toBe(digest);
    expect(permissionCatalogOf([auth, backend, { permissions: [permission("invoices.read")] }]).digest).not.toBe(digest);
    expect(permissionCatalogOf([auth]).digest).not.toBe(digest);
  });

  it("of the mesh starts with what Platform declares itself: the permission of tenants' own backups, for owners and admins", () => {
    const catalog = meshCatalogOf([auth, backend]);
    expect(catalog.permissions.map((p) => p.name)).toEqual(["backups.manage", "users.read", "users.write", "entries.read"]);
    expect(catalog.permissions[0]!.defaultRoles).toEqual([DefaultRole.ADMIN]);
    expect(catalog.digest).not.toBe(permissionCatalogOf([auth, backend]).digest);
  });
});
