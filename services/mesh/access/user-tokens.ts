import { Code, ConnectError } from "@connectrpc/connect";
import { createLocalJWKSet, decodeJwt, errors, jwtVerify, type JSONWebKeySet, type JWTVerifyGetKey } from "jose";
import { LRUCache } from "lru-cache";

/** Options of {@link UserTokens}. */
export interface UserTokensOptions {
  /**
   * Fetches a tenant's key set, as the JSON text of a JWK set, with the
   * names of the permissions in its catalog (from Auth: see `authKeySets`).
   */
  fetchKeySet: (tenantId: string, timeoutMs: number) => Promise<{ jwks: string; permissions: string[] }>;
  /** The `iss` every access token must carry. */
  issuer: string;
  /** How long a tenant's key set is kept (an unknown kid refreshes it sooner). */
  keySetTtlMs?: number;
  /** Deadline of a key set request. */
  timeoutMs?: number;
  /** How many verified tokens are remembered until they expire, so that a token's next call costs a lookup. */
  maxVerifiedTokens?: number;
  /**
   * How many tenants' key sets are kept ready to check signatures with (their
   * keys imported), the most recently used; another tenant's is made again
   * from the text of its key set when one of its tokens is first seen.
   */
  maxKeyLookups?: number;
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
  /**
   * Whether `token` passed verification before and is remembered: a user's
   * access token, then, whatever the call it comes with. Nothing is checked.
   */
  remembers?(token: string): boolean;
  /**
   * Whether the tenant's permission catalog holds `permission`, so that some
   * role of the tenant could grant it; undefined when that cannot be told.
   * Asked only when a token lacks a method's permission, to say why.
   */
  catalogHolds?(tenantId: string, permission: string): Promise<boolean | undefined>;
}

/**
 * What is kept of a tenant: its key set and the names in its permission
 * catalog, as fetched at `fetchedAt`. The key set's lookup, with its
 * imported keys, is kept apart (see `maxKeyLookups`): several times the
 * size of the text, and needed only for tokens not verified yet.
 */
interface TenantKeys {
  /** The key set's JSON text, as Auth sent it: the same string for as long as the text stays the same. */
  jwks: string;
  /** Shared by the tenants whose catalogs hold the same names. */
  catalog: ReadonlySet<string>;
  fetchedAt: number;
}

/** Looks keys up in a tenant's key set: the same function for as long as the key set's text stays the same. */
interface KeyLookup {
  jwks: string;
  getKey: JWTVerifyGetKey;
}

/** A token that passed verification: whom it speaks for, until when, and with which of its tenant's key sets (its text). */
interface VerifiedToken {
  user: TokenUser;
  /** Its `exp`, in ms. */
  expiresAt: number;
  jwks: string;
}

/** How old a tenant's kept catalog must be to be fetched again for a permission it lacks. */
const catalogTrustedMs = 250;

/**
 * Verifies users' access tokens: EdDSA JWTs signed with their tenant's own
 * key, whose key set is fetched from Auth (GetJwks) and kept per tenant,
 * fetched again when a token names a key not in it (a rotation). The
 * tenant's permission catalog comes with it.
 *
 * A verified token is remembered until it expires, so that its next calls
 * cost a lookup instead of a signature check. It is checked again once its
 * tenant's key set is fetched with other keys (a rotation), and once the
 * key set has been kept `keySetTtlMs`.
 *
 * What is kept per tenant is small, since a service may know tens of
 * thousands: the key set's text, a catalog shared with the tenants that have
 * the same, and the imported keys only of the tenants whose tokens were
 * verified most recently (`maxKeyLookups`).
 */
export class UserTokens implements TokenVerifier {
  readonly #options: UserTokensOptions;
  readonly #keySets: LRUCache<string, TenantKeys>;
  readonly #fetching = new Map<string, Promise<TenantKeys>>();
  /** When a token with an unknown kid last made us fetch a tenant's keys: at most once per quarter second. */
  readonly #forcedAt = new LRUCache<string, number>({ max: 10_000 });
  readonly #verified: LRUCache<string, VerifiedToken>;
  readonly #lookups: LRUCache<string, KeyLookup>;
  /** Sets of permission names, one per list of names: tenants' catalogs and users' permissions are mostly alike. */
  readonly #permissionSets = new LRUCache<string, ReadonlySet<string>>({ max: 1000 });

  constructor(options: UserTokensOptions) {
    this.#options = options;
    this.#keySets = new LRUCache({ max: 10_000, ttl: options.keySetTtlMs ?? 600_000 });
    this.#verified = new LRUCache({ max: options.maxVerifiedTokens ?? 10_000 });
    this.#lookups = new LRUCache({ max: options.maxKeyLookups ?? 1000 });
  }

  /**
   * Verifies `token` for the tenant the call names. UNAUTHENTICATED for a
   * token that is malformed, expired, not signed by the tenant's key or from
   * another issuer; PERMISSION_DENIED for a valid token of another tenant.
   */
  async verify(token: string, tenantId: string): Promise<TokenUser> {
    const known = this.#verified.get(token);
    if (known !== undefined) {
      if (known.user.tenantId !== tenantId) {
        throw wrongTenant(tenantId);
      }
      if (Date.now() < known.expiresAt && this.#keySets.get(tenantId)?.jwks === known.jwks) {
        return known.user;
      }
      this.#verified.delete(token);
    }
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
      throw wrongTenant(tenantId);
    }
    let keys = await this.#keySet(tenantId, false);
    let payload;
    for (let attempt = 0; ; attempt++) {
      try {
        ({ payload } = await jwtVerify(token, this.#lookupOf(tenantId, keys), {
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
          keys = await this.#keySet(tenantId, true);
          continue;
        }
        throw new ConnectError(`the access token is not valid (${reason(error)}): log in again`, Code.Unauthenticated);
      }
    }
    if (payload.tid !== tenantId) {
      throw wrongTenant(tenantId);
    }
    const permissions = Array.isArray(payload.permissions) ? payload.permissions.filter((p): p is string => typeof p === "string") : [];
    const user = { userId: payload.sub!, tenantId, permissions: this.#permissionSet(permissions) };
    this.#verified.set(token, { user, expiresAt: payload.exp! * 1000, jwks: keys.jwks });
    return user;
  }

  remembers(token: string): boolean {
    return this.#verified.has(token);
  }

  /**
   * Whether the tenant's permission catalog holds `permission`; undefined
   * when it cannot be fetched. A permission the kept catalog lacks is looked
   * for again in a fresh one (the catalog may have been merged since),
   * unless it was fetched in the last quarter second: however many calls
   * are refused, Auth is asked at most that often per tenant.
   */
  async catalogHolds(tenantId: string, permission: string): Promise<boolean | undefined> {
    try {
      let keys = await this.#keySet(tenantId, false);
      if (!keys.catalog.has(permission) && Date.now() - keys.fetchedAt > catalogTrustedMs) {
        keys = await this.#keySet(tenantId, true);
      }
      return keys.catalog.has(permission);
    } catch {
      return undefined;
    }
  }

  /** The lookup of a tenant's key set, made again from its text when it is no longer kept. */
  #lookupOf(tenantId: string, keys: TenantKeys): JWTVerifyGetKey {
    const kept = this.#lookups.get(tenantId);
    if (kept?.jwks === keys.jwks) {
      return kept.getKey;
    }
    const getKey = createLocalJWKSet(JSON.parse(keys.jwks) as JSONWebKeySet);
    this.#lookups.set(tenantId, { jwks: keys.jwks, getKey });
    return getKey;
  }

  /** A set of `names`, shared with every list of the same names in the same order. */
  #permissionSet(names: string[]): ReadonlySet<string> {
    const key = JSON.stringify(names);
    let set = this.#permissionSets.get(key);
    if (set === undefined) {
      set = new Set(names);
      this.#permissionSets.set(key, set);
    }
    return set;
  }

  async #keySet(tenantId: string, fresh: boolean): Promise<TenantKeys> {
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
        .then(({ jwks, permissions }) => {
          // The same keys as before keep their lookup, and the tokens verified with them stay verified.
          const previous = this.#keySets.peek(tenantId, { allowStale: true });
          const same = previous?.jwks === jwks;
          const kept = this.#lookups.peek(tenantId);
          if (!(same && kept?.jwks === previous.jwks)) {
            // Made now, whether or not a token needs it yet, so that a malformed key set fails its fetch.
            this.#lookups.set(tenantId, { jwks: same ? previous.jwks : jwks, getKey: createLocalJWKSet(JSON.parse(jwks) as JSONWebKeySet) });
          }
          const entry = { jwks: same ? previous.jwks : jwks, catalog: this.#permissionSet(permissions), fetchedAt: Date.now() };
          this.#keySets.set(tenantId, entry);
          return entry;
        })
        .finally(() => this.#fetching.delete(tenantId));
      this.#fetching.set(tenantId, fetching);
    }
    return fetching;
  }
}

function wrongTenant(tenantId: string): ConnectError {
  return new ConnectError(`the access token is for another tenant than "${tenantId}"`, Code.PermissionDenied);
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
