import { Code, ConnectError } from "@connectrpc/connect";
import { createLocalJWKSet, decodeJwt, errors, jwtVerify, type JSONWebKeySet, type JWTVerifyGetKey } from "jose";
import { LRUCache } from "lru-cache";

/** Options of {@link UserTokens}. */
export interface UserTokensOptions {
  /** Fetches a tenant's key set, as the JSON text of a JWK set (from Auth: see `authKeySets`). */
  fetchKeySet: (tenantId: string, timeoutMs: number) => Promise<string>;
  /** The `iss` every access token must carry. */
  issuer: string;
  /** How long a tenant's key set is kept (an unknown kid refreshes it sooner). */
  keySetTtlMs?: number;
  /** Deadline of a key set request. */
  timeoutMs?: number;
}

/** The user an access token speaks for. */
export interface TokenUser {
  userId: string;
  tenantId: string;
  permissions: ReadonlySet<string>;
}

/** Checks a user's access token for the tenant a call names (see {@link UserTokens}). */
export interface TokenVerifier {
  verify(token: string, tenantId: string): Promise<TokenUser>;
}

/**
 * Verifies users' access tokens: EdDSA JWTs signed with their tenant's own
 * key, whose key set is fetched from Auth (GetJwks) and kept per tenant,
 * fetched again when a token names a key not in it (a rotation).
 */
export class UserTokens implements TokenVerifier {
  readonly #options: UserTokensOptions;
  readonly #keySets: LRUCache<string, JWTVerifyGetKey>;
  readonly #fetching = new Map<string, Promise<JWTVerifyGetKey>>();
  /** When a token with an unknown kid last made us fetch a tenant's keys: at most once per quarter second. */
  readonly #forcedAt = new LRUCache<string, number>({ max: 10_000 });

  constructor(options: UserTokensOptions) {
    this.#options = options;
    this.#keySets = new LRUCache({ max: 10_000, ttl: options.keySetTtlMs ?? 600_000 });
  }

  /**
   * Verifies `token` for the tenant the call names. UNAUTHENTICATED for a
   * token that is malformed, expired, not signed by the tenant's key or from
   * another issuer; PERMISSION_DENIED for a valid token of another tenant.
   */
  async verify(token: string, tenantId: string): Promise<TokenUser> {
    let claimed: unknown;
    try {
      claimed = decodeJwt(token).tid;
    } catch {
      throw new ConnectError("the access token is not valid (malformed): log in again", Code.Unauthenticated);
    }
    if (typeof claimed !== "string") {
      throw new ConnectError("the credential is not a user's access token (it names no tenant): log in with AuthService/Login", Code.Unauthenticated);
    }
    if (claimed !== tenantId) {
      // Refused before any key is fetched: whatever its signature, it is not for this tenant.
      throw new ConnectError(`the access token is for another tenant than "${tenantId}"`, Code.PermissionDenied);
    }
    let keySet = await this.#keySet(tenantId, false);
    let payload;
    for (let attempt = 0; ; attempt++) {
      try {
        ({ payload } = await jwtVerify(token, keySet, {
          issuer: this.#options.issuer,
          algorithms: ["EdDSA"],
          typ: "at+jwt",
          requiredClaims: ["sub", "exp", "iat", "tid"],
        }));
        break;
      } catch (error) {
        // A key the cached set does not hold: maybe a rotation since. Ask again, once, unless just asked.
        if (error instanceof errors.JWKSNoMatchingKey && attempt === 0 && Date.now() - (this.#forcedAt.get(tenantId) ?? 0) > 250) {
          this.#forcedAt.set(tenantId, Date.now());
          keySet = await this.#keySet(tenantId, true);
          continue;
        }
        throw new ConnectError(`the access token is not valid (${reason(error)}): log in again`, Code.Unauthenticated);
      }
    }
    if (payload.tid !== tenantId) {
      throw new ConnectError(`the access token is for another tenant than "${tenantId}"`, Code.PermissionDenied);
    }
    const permissions = Array.isArray(payload.permissions) ? payload.permissions.filter((p): p is string => typeof p === "string") : [];
    return { userId: payload.sub!, tenantId, permissions: new Set(permissions) };
  }

  async #keySet(tenantId: string, fresh: boolean): Promise<JWTVerifyGetKey> {
    const cached = fresh ? undefined : this.#keySets.get(tenantId);
    if (cached !== undefined) {
      return cached;
    }
    let fetching = this.#fetching.get(tenantId);
    if (fetching === undefined) {
      fetching = this.#options
        .fetchKeySet(tenantId, this.#options.timeoutMs ?? 5000)
        .catch((error: unknown) => {
          const cause = ConnectError.from(error);
          // Auth waits for Platform as long as we wait for Auth: both mean it cannot be reached now.
          throw cause.code === Code.DeadlineExceeded ? new ConnectError(`cannot fetch tenant "${tenantId}"'s signing keys from Auth in time; retry later`, Code.Unavailable) : cause;
        })
        .then((jwks) => {
          const entry = createLocalJWKSet(JSON.parse(jwks) as JSONWebKeySet);
          this.#keySets.set(tenantId, entry);
          return entry;
        })
        .finally(() => this.#fetching.delete(tenantId));
      this.#fetching.set(tenantId, fetching);
    }
    return fetching;
  }
}

function reason(error: unknown): string {
  if (error instanceof errors.JWTExpired) {
    return "expired";
  }
  if (error instanceof errors.JWTClaimValidationFailed) {
    return `claim "${error.claim}" ${error.reason === "check_failed" ? "is wrong" : "is missing"}`;
  }
  if (error instanceof errors.JWKSNoMatchingKey) {
    return "signed with a key the tenant does not have";
  }
  if (error instanceof errors.JOSEAlgNotAllowed) {
    return "algorithm not allowed";
  }
  if (error instanceof errors.JWSSignatureVerificationFailed) {
    return "bad signature";
  }
  return "malformed";
}
