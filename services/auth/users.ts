import { Code, ConnectError } from "@connectrpc/connect";
import { UniqueConstraintViolationException, type EntityManager } from "@mikro-orm/postgresql";
import { randomUUID } from "node:crypto";
import { checkEmail, checkPassword, checkUuid, pageOf, readPage } from "../mesh/index.ts";
import { hashPassword } from "./passwords.ts";

/** A user as the API shows it. */
export interface UserRecord {
  userId: string;
  email: string;
  displayName: string;
  roles: string[];
  createTime: Date;
  updateTime: Date;
}

interface UserRow {
  id: string;
  email: string;
  display_name: string;
  roles: string[] | null;
  created_at: string | Date;
  updated_at: string | Date;
}

const selectUsers = `select u.id, u.email, u.display_name, u.created_at, u.updated_at,
    array_remove(array_agg(r.name order by r.name), null) as roles
  from users u left join user_roles ur on ur.user_id = u.id left join roles r on r.id = ur.role_id`;

function toRecord(row: UserRow): UserRecord {
  return {
    userId: row.id,
    email: row.email,
    displayName: row.display_name,
    roles: row.roles ?? [],
    createTime: new Date(row.created_at),
    updateTime: new Date(row.updated_at),
  };
}

function checkUserId(userId: string): string {
  return checkUuid(userId, "user_id");
}

function checkDisplayName(name: string): string {
  const trimmed = name.trim();
  if ([...trimmed].length > 200) {
    throw new ConnectError("display_name is longer than 200 characters", Code.InvalidArgument);
  }
  return trimmed;
}

/** Role ids by name; INVALID_ARGUMENT naming any unknown role. */
async function roleIds(em: EntityManager, names: string[]): Promise<string[]> {
  const unique = [...new Set(names)];
  if (unique.length === 0) {
    return [];
  }
  const rows = await em.execute<{ id: string; name: string }[]>("select id, name from roles where name in (?)", [unique]);
  const unknown = unique.filter((n) => !rows.some((r) => r.name === n));
  if (unknown.length > 0) {
    throw new ConnectError(`unknown role ${unknown.map((n) => `"${n.slice(0, 60)}"`).join(", ")}: see RoleService/ListRoles`, Code.InvalidArgument);
  }
  return rows.map((r) => r.id);
}

/** Refuses a change that leaves the tenant without any owner. Run inside the change's transaction. */
export async function keepAnOwner(em: EntityManager): Promise<void> {
  const [row] = await em.execute<{ n: string }[]>(
    "select count(*) as n from user_roles ur join roles r on r.id = ur.role_id where r.name = 'owner'",
  );
  if (Number(row!.n) === 0) {
    throw new ConnectError("the tenant would be left without an owner: give another user the owner role first", Code.FailedPrecondition);
  }
}

/** Returns one user, or NOT_FOUND. */
export async function getUser(em: EntityManager, userId: string): Promise<UserRecord> {
  const [row] = await em.execute<UserRow[]>(`${selectUsers} where u.id = ? group by u.id`, [checkUserId(userId)]);
  if (row === undefined) {
    throw new ConnectError(`user "${userId}" not found`, Code.NotFound);
  }
  return toRecord(row);
}

/** A new user's fields, checked, with the password already hashed. */
export interface NewUser {
  email: string;
  passwordHash: string;
  displayName: string;
  roles: string[];
}

/** Checks a new user's fields and hashes the password: slow (Argon2id), so done before any transaction. */
export async function newUser(request: { email: string; password: string; displayName: string; roles: string[] }): Promise<NewUser> {
  const email = checkEmail(request.email);
  const displayName = checkDisplayName(request.displayName);
  const passwordHash = await hashPassword(checkPassword(request.password));
  return { email, passwordHash, displayName, roles: request.roles };
}

/** Creates a user within the tenant's user limit (`maxUsers`, 0 for none). */
export async function createUser(em: EntityManager, user: NewUser, maxUsers: number): Promise<UserRecord> {
  const id = randomUUID();
  try {
    await em.transactional(async (tx) => {
      // One creation at a time per tenant, so that the limit holds under concurrency. Advisory locks are
      // database-wide: the key names the tenant's schema ('tenantry.auth.users' in a dedicated database),
      // so that the tenants of a pool database do not wait for each other.
      await tx.execute("select pg_advisory_xact_lock(hashtext('tenantry.' || current_schema() || '.users'))");
      if (maxUsers > 0) {
        const [row] = await tx.execute<{ n: string }[]>("select count(*) as n from users");
        if (Number(row!.n) >= maxUsers) {
          throw new ConnectError(`the tenant has ${maxUsers} users, all its tier allows: delete one or move to a larger tier`, Code.ResourceExhausted);
        }
      }
      const roles = await roleIds(tx, user.roles);
      await tx.execute("insert into users (id, email, display_name, password_hash) values (?, ?, ?, ?)", [id, user.email, user.displayName, user.passwordHash]);
      for (const roleId of roles) {
        await tx.execute("insert into user_roles (user_id, role_id) values (?, ?)", [id, roleId]);
      }
    });
  } catch (error) {
    if (error instanceof UniqueConstraintViolationException) {
      throw new ConnectError(`a user with email "${user.email}" exists already`, Code.AlreadyExists);
    }
    throw error;
  }
  return getUser(em, id);
}

/** Lists users ordered by email, one page at a time. */
export async function listUsers(em: EntityManager, request: { pageSize: number; pageToken: string }): Promise<{ users: UserRecord[]; nextPageToken: string }> {
  const { size, after } = readPage(request, isUserCursor);
  const rows = await em.execute<UserRow[]>(
    `${selectUsers} ${after === undefined ? "" : "where (lower(u.email), u.id::text) > (?, ?)"} group by u.id order by lower(u.email), u.id::text limit ?`,
    after === undefined ? [size + 1] : [...after, size + 1],
  );
  const page = pageOf(rows.map(toRecord), size, (last): UserCursor => [last.email.toLowerCase(), last.userId]);
  return { users: page.items, nextPageToken: page.nextPageToken };
}

/** Where a page of users ended: the last user's email in lower case, and id. */
type UserCursor = [email: string, id: string];

function isUserCursor(value: unknown): value is UserCursor {
  return Array.isArray(value) && value.length === 2 && value.every((v) => typeof v === "string");
}

/** The fields of a user an update can change, as `update_mask` names them. */
export const changeableUserFields = ["display_name", "password", "roles"] as const;

/** Changes the fields named in `paths` (checked against {@link changeableUserFields} by the caller). */
export async function updateUser(
  em: EntityManager,
  userId: string,
  change: { displayName: string; password: string; roles: string[]; paths: (typeof changeableUserFields)[number][] },
): Promise<UserRecord> {
  const id = checkUserId(userId);
  const passwordHash = change.paths.includes("password") ? await hashPassword(checkPassword(change.password)) : undefined;
  const displayName = change.paths.includes("display_name") ? checkDisplayName(change.displayName) : undefined;
  await em.transactional(async (tx) => {
    const [exists] = await tx.execute<{ id: string }[]>("select id from users where id = ? for update", [id]);
    if (exists === undefined) {
      throw new ConnectError(`user "${userId}" not found`, Code.NotFound);
    }
    if (displayName !== undefined) {
      await tx.execute("update users set display_name = ?, updated_at = now() where id = ?", [displayName, id]);
    }
    if (passwordHash !== undefined) {
      await tx.execute("update users set password_hash = ?, updated_at = now() where id = ?", [passwordHash, id]);
      // A new password ends the sign-ins made with the old one.
      await tx.execute("update refresh_tokens set revoked_at = now() where user_id = ? and revoked_at is null", [id]);
    }
    if (change.paths.includes("roles")) {
      const roles = await roleIds(tx, change.roles);
      await tx.execute("delete from user_roles where user_id = ?", [id]);
      for (const roleId of roles) {
        await tx.execute("insert into user_roles (user_id, role_id) values (?, ?)", [id, roleId]);
      }
      await tx.execute("update users set updated_at = now() where id = ?", [id]);
      await keepAnOwner(tx);
    }
  });
  return getUser(em, id);
}

/** Deletes a user (and its sign-ins); never the last owner. */
export async function deleteUser(em: EntityManager, userId: string): Promise<void> {
  const id = checkUserId(userId);
  await em.transactional(async (tx) => {
    const deleted = await tx.execute<{ id: string }[]>("delete from users where id = ? returning id", [id]);
    if (deleted.length === 0) {
      throw new ConnectError(`user "${userId}" not found`, Code.NotFound);
    }
    await keepAnOwner(tx);
  });
}
