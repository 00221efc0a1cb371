import { Code, ConnectError } from "@connectrpc/connect";
import type { EntityManager } from "@mikro-orm/postgresql";
import { SignJWT } from "jose";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import type { LoginThrottle } from "./login-throttle.ts";
import { verifyPassword } from "./passwords.ts";
import { signingAlgorithm, type SigningKeys } from "./signing-keys.ts";

/** How long an access token is valid. */
export const accessTokenSeconds = 15 * 60;
/** How long a refresh token is valid. */
const refreshTokenDays = 30;

/** The tokens of a sign-in. */
export interface Tokens {
  accessToken: string;
  refreshToken: string;
  expiresIn: number;
}

/** What sessions need. */
export interface SessionDeps {
  keys: SigningKeys;
  throttle: LoginThrottle;
  /** The `iss` of every access token. */
  issuer: string;
}

const invalidLogin = () => new ConnectError("wrong email or password", Code.Unauthenticated);
const invalidRefresh = () => new ConnectError("the refresh token is not valid: log in again", Code.Unauthenticated);

/** Signs a user in with email and password. Run in the tenant's scope. */
export async function login(em: EntityManager, deps: SessionDeps, tenantId: string, email: string, password: string): Promise<Tokens> {
  deps.throttle.check(tenantId, email);
  const [user] = await em.execute<{ id: string; password_hash: string }[]>("select id, password_hash from users where lower(email) = lower(?)", [email.trim()]);
  if (!(await verifyPassword(user?.password_hash, password)) || user === undefined) {
    deps.throttle.failed(tenantId, email);
    throw invalidLogin();
  }
  deps.throttle.succeeded(tenantId, email);
  return issue(em, deps, tenantId, user.id, randomUUID());
}

/** Exchanges a refresh token for new tokens; a reused one revokes its whole family. Run in the tenant's scope. */
export async function refresh(em: EntityManager, deps: SessionDeps, tenantId: string, refreshToken: string): Promise<Tokens> {
  const outcome = await em.transactional(async (tx) => {
    const [token] = await tx.execute<{ id: string; family: string; user_id: string; expires_at: string | Date; used_at: unknown; revoked_at: unknown }[]>(
      "select id, family, user_id, expires_at, used_at, revoked_at from refresh_tokens where token_hash = ? for update",
      [digest(refreshToken)],
    );
    if (token === undefined || token.revoked_at !== null || new Date(token.expires_at).getTime() < Date.now()) {
      return undefined;
    }
    if (token.used_at !== null) {
      // Spent already: someone holds a copy. End the whole sign-in.
      await tx.execute("update refresh_tokens set revoked_at = now() where family = ? and revoked_at is null", [token.family]);
      return "reused" as const;
    }
    await tx.execute("update refresh_tokens set used_at = now() where id = ?", [token.id]);
    return issue(tx, deps, tenantId, token.user_id, token.family);
  });
  if (outcome === undefined || outcome === "reused") {
    throw invalidRefresh();
  }
  return outcome;
}

/** Revokes a refresh token's whole sign-in; unknown tokens are ignored. Run in the tenant's scope. */
export async function logout(em: EntityManager, refreshToken: string): Promise<void> {
  await em.execute(
    "update refresh_tokens set revoked_at = now() where revoked_at is null and family = (select family from refresh_tokens where token_hash = ?)",
    [digest(refreshToken)],
  );
}

/** Revokes every sign-in of the tenant, as when its data is a copy of another tenant's. Run in the tenant's scope. */
export async function revokeAllSessions(em: EntityManager): Promise<void> {
  await em.execute("update refresh_tokens set revoked_at = now() where revoked_at is null");
}

/** The permissions a user holds through its roles. */
export async function permissionsOf(em: EntityManager, userId: string): Promise<string[]> {
  const rows = await em.execute<{ permission: string }[]>(
    "select distinct rp.permission from user_roles ur join role_permissions rp on rp.role_id = ur.role_id where ur.user_id = ? order by 1",
    [userId],
  );
  return rows.map((r) => r.permission);
}

async function issue(em: EntityManager, deps: SessionDeps, tenantId: string, userId: string, family: string): Promise<Tokens> {
  const { current } = await deps.keys.keys(em, tenantId);
  const accessToken = await new SignJWT({ tid: tenantId, permissions: await permissionsOf(em, userId) })
    .setProtectedHeader({ alg: signingAlgorithm, kid: current.kid, typ: "at+jwt" })
    .setIssuer(deps.issuer)
    .setSubject(userId)
    .setIssuedAt()
    .setExpirationTime(`${accessTokenSeconds}s`)
    .setJti(randomUUID())
    .sign(current.privateKey);
  const refreshToken = randomBytes(32).toString("base64url");
  await em.execute("insert into refresh_tokens (id, family, user_id, token_hash, expires_at) values (?, ?, ?, ?, now() + interval '1 day' * ?)", [
    randomUUID(),
    family,
    userId,
    digest(refreshToken),
    refreshTokenDays,
  ]);
  return { accessToken, refreshToken, expiresIn: accessTokenSeconds };
}

function digest(token: string): Buffer {
  return createHash("sha256").update(token).digest();
}
