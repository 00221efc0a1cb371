import { create } from "@bufbuild/protobuf";
import { Code, type Client } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthService } from "../../gen/tenantry/auth/v1/auth_service_pb.js";
import { RoleService } from "../../gen/tenantry/auth/v1/role_service_pb.js";
import { UserService } from "../../gen/tenantry/auth/v1/user_service_pb.js";
import { DefaultRole, PermissionSchema } from "../../gen/tenantry/options/v1/access_pb.js";
import type { Placement, TenantRoute } from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import { TenantSchemaService } from "../../gen/tenantry/schema/v1/tenant_schema_service_pb.js";
import { declaredCatalog, permissionsOfDefaultRole } from "../testing/declared-catalog.ts";
import { failure } from "../testing/failure.ts";
import { placements } from "../testing/placements.ts";
import { startSingleAuth, type SingleAuth } from "../testing/single-service.ts";
import { ownerRole } from "./permission-catalog.ts";

const password = "correct horse battery";
const permission = (name: string, description: string, defaultRoles: DefaultRole[]) => create(PermissionSchema, { name, description, defaultRoles });
/** What a service registered later declares. */
const invoices = [permission("invoices.read", "see invoices", [DefaultRole.ADMIN, DefaultRole.VIEWER]), permission("invoices.write", "issue invoices", [DefaultRole.ADMIN])];

let single: SingleAuth;
let schema: Client<typeof TenantSchemaService>;
let auth: Client<typeof AuthService>;
let users: Client<typeof UserService>;
let roles: Client<typeof RoleService>;
beforeAll(async () => {
  single = await startSingleAuth();
  schema = single.client(TenantSchemaService, [single.meshCredentials.clientInterceptor()]);
  auth = single.client(AuthService);
  users = single.client(UserService);
  roles = single.client(RoleService);
});
afterAll(() => single?.stop());

/** A tenant bootstrapped with every declared permission and an owner, and call options as one of its users. */
async function ownedTenant(placement: Placement) {
  const route = await single.createTenant({ ownerEmail: "owner@example.com", ownerPassword: password, placement });
  const as = async (email: string) => {
    const { accessToken } = await auth.login({ email, password }, { headers: { "x-tenant-id": route.tenantId } });
    return { headers: { "x-tenant-id": route.tenantId, authorization: `Bearer ${accessToken}` } };
  };
  return { tenantId: route.tenantId, route, as };
}

/** Each role of a tenant with the permissions it holds, in order. */
async function grants(route: TenantRoute): Promise<Record<string, string[]>> {
  const rows = await single.sqlAs<{ name: string; permissions: string[] }>(
    route,
    "select r.name, array_remove(array_agg(rp.permission order by rp.permission), null) as permissions from roles r left join role_permissions rp on rp.role_id = r.id group by r.name",
  );
  return Object.fromEntries(rows.map((row) => [row.name, row.permissions]));
}

const withInvoices = (permissions: string[] | undefined, ...added: string[]) => [...(permissions ?? []), ...added].sort();

// Each test runs against tenants of both placements, on the one Auth.
describe.each(placements)("a tenant's permission catalog ($name tenants)", ({ placement }) => {
  it("takes in permissions declared later: the owner and the default roles they name get them, the tenant's own roles keep theirs", async () => {
    const tenant = await ownedTenant(placement);
    const owner = await tenant.as("owner@example.com");
    await roles.createRole({ name: "auditor", description: "reads users", permissions: ["users.read"] }, owner);
    const before = await grants(tenant.route);

    const merged = await schema.migrate({ tenantId: tenant.tenantId, permissions: [...declaredCatalog, ...invoices] });
    expect(merged).toMatchObject({ service: "auth", applied: [], addedPermissions: ["invoices.read", "invoices.write"] });
    const after = await grants(tenant.route);
    expect(after).toEqual({
      ...before,
      [ownerRole]: withInvoices(before[ownerRole], "invoices.read", "invoices.write"),
      admin: withInvoices(before.admin, "invoices.read", "invoices.write"),
      viewer: withInvoices(before.viewer, "invoices.read"),
    });
    expect((await auth.whoAmI({}, await tenant.as("owner@example.com"))).permissions).toEqual(expect.arrayContaining(["invoices.read", "invoices.write"]));

    // Declared since with another description and other default roles: the description follows, the grants stay.
    const changed = permission("invoices.read", "see invoices and credit notes", [DefaultRole.MEMBER]);
    expect((await schema.migrate({ tenantId: tenant.tenantId, permissions: [...declaredCatalog, changed, invoices[1]!] })).addedPermissions).toEqual([]);
    expect(await grants(tenant.route)).toEqual(after);
    const { permissions } = await roles.listPermissions({}, owner);
    expect(permissions.find((p) => p.name === "invoices.read")?.description).toBe("see invoices and credit notes");

    // No longer declared: kept, since roles hold it.
    expect((await schema.migrate({ tenantId: tenant.tenantId, permissions: declaredCatalog })).addedPermissions).toEqual([]);
    expect(await grants(tenant.route)).toEqual(after);
  });

  it("tells a permission no role can grant from one the user's roles do not grant, until Migrate brings the catalog current", async () => {
    const tenant = await ownedTenant(placement);
    // As a tenant whose catalog is not current: users.read has not reached it.
    await single.sqlAs(tenant.route, "delete from role_permissions where permission = 'users.read'");
    await single.sqlAs(tenant.route, "delete from permissions where name = 'users.read'");
    const owner = await tenant.as("owner@example.com");
    await users.createUser({ email: "viewer@example.com", password, roles: ["viewer"] }, owner);

    const missing = await failure(users.listUsers({}, owner));
    expect(missing.code).toBe(Code.FailedPrecondition);
    expect(missing.rawMessage).toBe(
      `tenantry.auth.v1.UserService/ListUsers needs permission "users.read", which no role of tenant "${tenant.tenantId}" can grant: the tenant's permission catalog lacks it (the service that declares it is not registered with Platform, or the tenant's catalog is not current: run FleetService/MigrateTenants with only_behind)`,
    );
    const denied = await failure(users.createUser({ email: "someone@example.com", password }, await tenant.as("viewer@example.com")));
    expect(denied.code).toBe(Code.PermissionDenied);
    expect(denied.rawMessage).toBe(`tenantry.auth.v1.UserService/CreateUser needs permission "users.write", which the user's roles do not grant`);

    expect((await schema.migrate({ tenantId: tenant.tenantId, permissions: declaredCatalog })).addedPermissions).toEqual(["users.read"]);
    expect((await grants(tenant.route)).admin).toEqual(permissionsOfDefaultRole("admin"));
    const { users: listed } = await users.listUsers({}, await tenant.as("owner@example.com"));
    expect(listed.map((u) => u.email)).toEqual(["owner@example.com", "viewer@example.com"]);
  });
});
