import { Code, ConnectError } from "@connectrpc/connect";
import { UniqueConstraintViolationException, type EntityManager } from "@mikro-orm/postgresql";
import { randomUUID } from "node:crypto";
import { keepAnOwner } from "./users.ts";

/** A role as the API shows it. */
export interface RoleRecord {
  name: string;
  description: string;
  permissions: string[];
  builtin: boolean;
}

const selectRoles = `select r.name, r.description, r.builtin, array_remove(array_agg(rp.permission order by rp.permission), null) as permissions
  from roles r left join role_permissions rp on rp.role_id = r.id`;

function checkName(name: string): string {
  if (!/^[a-z0-9][a-z0-9_-]{1,59}$/.test(name)) {
    throw new ConnectError(`malformed role name "${name.slice(0, 60)}": use 2 to 60 lower-case letters, digits, '-' and '_'`, Code.InvalidArgument);
  }
  return name;
}

async function checkPermissions(em: EntityManager, permissions: string[]): Promise<string[]> {
  const unique = [...new Set(permissions)];
  if (unique.length === 0) {
    return [];
  }
  const known = await em.execute<{ name: string }[]>("select name from permissions where name in (?)", [unique]);
  const unknown = unique.filter((p) => !known.some((k) => k.name === p));
  if (unknown.length > 0) {
    throw new ConnectError(`unknown permission "${unknown[0]!.slice(0, 100)}": see RoleService/ListPermissions`, Code.InvalidArgument);
  }
  return unique;
}

/** A role by name that may be changed: NOT_FOUND, or FAILED_PRECONDITION for a default role. */
async function changeableRole(em: EntityManager, name: string): Promise<string> {
  const [role] = await em.execute<{ id: string; builtin: boolean }[]>("select id, builtin from roles where name = ? for update", [name]);
  if (role === undefined) {
    throw new ConnectError(`role "${name}" not found`, Code.NotFound);
  }
  if (role.builtin) {
    throw new ConnectError(`role "${name}" is a default role and cannot change; create a role of your own`, Code.FailedPrecondition);
  }
  return role.id;
}

export async function getRole(em: EntityManager, name: string): Promise<RoleRecord> {
  const [row] = await em.execute<RoleRecord[]>(`${selectRoles} where r.name = ? group by r.id`, [name]);
  if (row === undefined) {
    throw new ConnectError(`role "${name}" not found`, Code.NotFound);
  }
  return row;
}

export function listRoles(em: EntityManager): Promise<RoleRecord[]> {
  return em.execute<RoleRecord[]>(`${selectRoles} group by r.id order by r.name`);
}

export async function createRole(em: EntityManager, request: { name: string; description: string; permissions: string[] }): Promise<RoleRecord> {
  const name = checkName(request.name);
  try {
    await em.transactional(async (tx) => {
      const permissions = await checkPermissions(tx, request.permissions);
      const id = randomUUID();
      await tx.execute("insert into roles (id, name, description) values (?, ?, ?)", [id, name, request.description.trim().slice(0, 500)]);
      for (const permission of permissions) {
        await tx.execute("insert into role_permissions (role_id, permission) values (?, ?)", [id, permission]);
      }
    });
  } catch (error) {
    if (error instanceof UniqueConstraintViolationException) {
      throw new ConnectError(`a role named "${name}" exists already`, Code.AlreadyExists);
    }
    throw error;
  }
  return getRole(em, name);
}

/** The fields of a role an update can change, as `update_mask` names them. */
export const changeableRoleFields = ["description", "permissions"] as const;

/** Changes the fields named in `paths` (checked against {@link changeableRoleFields} by the caller). */
export async function updateRole(
  em: EntityManager,
  name: string,
  change: { description: string; permissions: string[]; paths: (typeof changeableRoleFields)[number][] },
): Promise<RoleRecord> {
  await em.transactional(async (tx) => {
    const id = await changeableRole(tx, name);
    if (change.paths.includes("description")) {
      await tx.execute("update roles set description = ? where id = ?", [change.description.trim().slice(0, 500), id]);
    }
    if (change.paths.includes("permissions")) {
      const permissions = await checkPermissions(tx, change.permissions);
      await tx.execute("delete from role_permissions where role_id = ?", [id]);
      for (const permission of permissions) {
        await tx.execute("insert into role_permissions (role_id, permission) values (?, ?)", [id, permission]);
      }
    }
  });
  return getRole(em, name);
}

export async function deleteRole(em: EntityManager, name: string): Promise<void> {
  await em.transactional(async (tx) => {
    const id = await changeableRole(tx, name);
    await tx.execute("delete from roles where id = ?", [id]);
  });
}

/** Gives a user a role (again: nothing changes), or takes it away. */
export async function setRole(em: EntityManager, userId: string, role: string, granted: boolean): Promise<void> {
  await em.transactional(async (tx) => {
    const [user] = await tx.execute<{ id: string }[]>("select id from users where id::text = ?", [userId.toLowerCase()]);
    if (user === undefined) {
      throw new ConnectError(`user "${userId.slice(0, 60)}" not found`, Code.NotFound);
    }
    const [found] = await tx.execute<{ id: string }[]>("select id from roles where name = ?", [role]);
    if (found === undefined) {
      throw new ConnectError(`role "${role.slice(0, 60)}" not found`, Code.NotFound);
    }
    if (granted) {
      await tx.execute("insert into user_roles (user_id, role_id) values (?, ?) on conflict do nothing", [user.id, found.id]);
      return;
    }
    await tx.execute("delete from user_roles where user_id = ? and role_id = ?", [user.id, found.id]);
    await keepAnOwner(tx);
  });
}

export function listPermissions(em: EntityManager): Promise<{ name: string; description: string }[]> {
  return em.execute("select name, description from permissions order by name");
}
