import type { EntityManager } from "@mikro-orm/postgresql";
import { DefaultRole } from "../../gen/tenantry/options/v1/access_pb.js";
import { uniquePermissions, type Permission } from "../mesh/index.ts";

/** The role that holds every permission of its tenant's catalog, whenever it arrived. */
export const ownerRole = "owner";

/**
 * The roles every tenant starts with, which it cannot change, and what each
 * is for. The owner holds every permission; the others hold those whose
 * declaration names them (`default_roles`).
 */
export const defaultRoles = {
  [ownerRole]: "everything",
  admin: "manages users and roles, and works with the tenant's data",
  member: "works with the tenant's data",
  viewer: "reads the tenant's data",
} as const;

/** The tenant's name of each default role a declaration may name. */
const defaultRoleNames: Record<DefaultRole, keyof typeof defaultRoles | undefined> = {
  [DefaultRole.UNSPECIFIED]: undefined,
  [DefaultRole.ADMIN]: "admin",
  [DefaultRole.MEMBER]: "member",
  [DefaultRole.VIEWER]: "viewer",
};

/** The names of the default roles `permission` declares it is given to. */
export function defaultRolesOf(permission: Permission): string[] {
  return permission.defaultRoles.flatMap((role) => defaultRoleNames[role] ?? []);
}

/**
 * Merges declared permissions into the catalog of the tenant in scope
 * (its `permissions` table), inside the caller's transaction or one of its own:
 * a permission new to the catalog is added and given to the default roles
 * its declaration names; one the catalog holds keeps its grants, and its
 * description follows the declaration. The default roles in `newRoles`
 * (just created) get every declared permission that names them. The owner
 * then holds every permission of the catalog, and nothing is taken away
 * from any role: a permission no service declares any more stays, since
 * roles may hold it. The first declaration of a name stands. Returns the
 * names added, in the order declared.
 */
export async function mergePermissions(em: EntityManager, permissions: readonly Permission[], options: { newRoles?: readonly string[] } = {}): Promise<string[]> {
  const rows = uniquePermissions(permissions).filter((p) => p.name !== "").map((p) => ({ name: p.name, description: p.description, roles: defaultRolesOf(p) }));
  // Inside a caller's transaction (BootstrapTenant's), its work is already all or nothing: no savepoint of its own.
  const transactional = <T>(work: (tx: EntityManager) => Promise<T>) => (em.isInTransaction() ? work(em) : em.transactional(work));
  return transactional(async (tx) => {
    const declaredRows = JSON.stringify(rows);
    const inserted = await tx.execute<{ name: string }[]>(
      `insert into permissions (name, description)
       select name, description from jsonb_to_recordset(?::jsonb) as p(name text, description text)
       on conflict (name) do nothing returning name`,
      [declaredRows],
    );
    await tx.execute(
      `update permissions p set description = d.description from jsonb_to_recordset(?::jsonb) as d(name text, description text)
       where p.name = d.name and p.description <> d.description`,
      [declaredRows],
    );
    const added = new Set(inserted.map((row) => row.name));
    const newRoles = new Set(options.newRoles ?? []);
    const grants = rows.flatMap(({ name, roles }) => roles.filter((role) => added.has(name) || newRoles.has(role)).map((role) => ({ name, role })));
    await tx.execute(
      `insert into role_permissions (role_id, permission)
       select r.id, g.name from jsonb_to_recordset(?::jsonb) as g(name text, role text) join roles r on r.builtin and r.name = g.role
       on conflict do nothing`,
      [JSON.stringify(grants)],
    );
    await tx.execute(
      `insert into role_permissions (role_id, permission)
       select r.id, p.name from roles r cross join permissions p where r.builtin and r.name = ?
       on conflict do nothing`,
      [ownerRole],
    );
    return rows.map((row) => row.name).filter((name) => added.has(name));
  });
}
