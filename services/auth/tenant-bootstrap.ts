import { Code, ConnectError } from "@connectrpc/connect";
import type { EntityManager } from "@mikro-orm/postgresql";
import { randomUUID } from "node:crypto";
import { checkEmail, checkPassword, type Permission } from "../mesh/index.ts";
import { hashPassword } from "./passwords.ts";
import { defaultRoles, mergePermissions, ownerRole } from "./permission-catalog.ts";
import type { SigningKeys } from "./signing-keys.ts";

/**
 * Gives a tenant its default roles, `permissions` merged into its catalog
 * (see `mergePermissions`: a default role made now gets every permission
 * that names it), its first signing key and (when an email is given) its
 * owner, keeping whatever of it exists already. Run in the tenant's scope.
 */
export async function bootstrapTenant(
  em: EntityManager,
  keys: SigningKeys,
  request: { tenantId: string; ownerEmail: string; ownerPassword: string },
  permissions: readonly Permission[],
): Promise<{ ownerUserId: string; roles: string[] }> {
  const email = request.ownerEmail === "" ? undefined : checkEmail(request.ownerEmail, "owner_email");
  const passwordHash = email === undefined ? undefined : await hashPassword(checkPassword(request.ownerPassword, "owner_password"));
  return em.transactional(async (tx) => {
    // Every default role in one statement, each made only if missing.
    const made = await tx.execute<{ name: string }[]>(
      `insert into roles (id, name, description, builtin)
       select id, name, description, true from jsonb_to_recordset(?::jsonb) as r(id uuid, name text, description text)
       on conflict (name) do nothing returning name`,
      [JSON.stringify(Object.entries(defaultRoles).map(([name, description]) => ({ id: randomUUID(), name, description })))],
    );
    const newRoles = made.map((role) => role.name);
    await mergePermissions(tx, permissions, { newRoles });
    const owners = await tx.execute<{ id: string; email: string }[]>(
      "select u.id, u.email from users u join user_roles ur on ur.user_id = u.id join roles r on r.id = ur.role_id where r.name = ?",
      [ownerRole],
    );
    let owner = owners.find((o) => o.email.toLowerCase() === email?.toLowerCase());
    if (email !== undefined && owner === undefined && owners.length > 0) {
      throw new ConnectError(`tenant "${request.tenantId}" already has an owner`, Code.AlreadyExists);
    }
    if (email !== undefined && passwordHash !== undefined && owner === undefined) {
      const id = randomUUID();
      await tx.execute("insert into users (id, email, password_hash) values (?, ?, ?)", [id, email, passwordHash]);
      await tx.execute("insert into user_roles (user_id, role_id) select ?, id from roles where name = ?", [id, ownerRole]);
      owner = { id, email };
    }
    await keys.ensure(tx, request.tenantId);
    const roles = await tx.execute<{ name: string }[]>("select name from roles order by name");
    return { ownerUserId: owner?.id ?? "", roles: roles.map((r) => r.name) };
  });
}
