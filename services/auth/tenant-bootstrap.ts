import { Code, ConnectError } from "@connectrpc/connect";
import type { EntityManager } from "@mikro-orm/postgresql";
import { randomUUID } from "node:crypto";
import { permissionCatalog } from "./migrations/create-identity.ts";
import { checkEmail, checkPassword } from "../mesh/index.ts";
import { hashPassword } from "./passwords.ts";
import type { SigningKeys } from "./signing-keys.ts";

/** The roles every tenant starts with, and their permissions. */
export const defaultRoles: Record<string, { description: string; permissions: string[] }> = {
  owner: { description: "everything", permissions: permissionCatalog.map(([name]) => name) },
  admin: { description: "users, roles and entries", permissions: ["users.read", "users.write", "roles.read", "roles.write", "entries.read", "entries.write"] },
  member: { description: "reads and writes entries", permissions: ["entries.read", "entries.write"] },
  viewer: { description: "reads entries", permissions: ["entries.read"] },
};

/**
 * Gives a tenant its default roles, its first signing key and (when an
 * email is given) its owner, keeping whatever of it exists already. Run in
 * the tenant's scope.
 */
export async function bootstrapTenant(
  em: EntityManager,
  keys: SigningKeys,
  request: { tenantId: string; ownerEmail: string; ownerPassword: string },
): Promise<{ ownerUserId: string; roles: string[] }> {
  const email = request.ownerEmail === "" ? undefined : checkEmail(request.ownerEmail, "owner_email");
  const passwordHash = email === undefined ? undefined : await hashPassword(checkPassword(request.ownerPassword, "owner_password"));
  return em.transactional(async (tx) => {
    for (const [name, role] of Object.entries(defaultRoles)) {
      await tx.execute("insert into auth.roles (id, name, description, builtin) values (?, ?, ?, true) on conflict (name) do nothing", [randomUUID(), name, role.description]);
      for (const permission of role.permissions) {
        await tx.execute(
          "insert into auth.role_permissions (role_id, permission) select id, ? from auth.roles where name = ? on conflict do nothing",
          [permission, name],
        );
      }
    }
    const owners = await tx.execute<{ id: string; email: string }[]>(
      "select u.id, u.email from auth.users u join auth.user_roles ur on ur.user_id = u.id join auth.roles r on r.id = ur.role_id where r.name = 'owner'",
    );
    let owner = owners.find((o) => o.email.toLowerCase() === email?.toLowerCase());
    if (email !== undefined && owner === undefined && owners.length > 0) {
      throw new ConnectError(`tenant "${request.tenantId}" already has an owner`, Code.AlreadyExists);
    }
    if (email !== undefined && passwordHash !== undefined && owner === undefined) {
      const id = randomUUID();
      await tx.execute("insert into auth.users (id, email, password_hash) values (?, ?, ?)", [id, email, passwordHash]);
      await tx.execute("insert into auth.user_roles (user_id, role_id) select ?, id from auth.roles where name = 'owner'", [id]);
      owner = { id, email };
    }
    await keys.ensure(tx, request.tenantId);
    const roles = await tx.execute<{ name: string }[]>("select name from auth.roles order by name");
    return { ownerUserId: owner?.id ?? "", roles: roles.map((r) => r.name) };
  });
}
