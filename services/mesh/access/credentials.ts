import type { Interceptor } from "@connectrpc/connect";
import { decodeProtectedHeader, jwtVerify, SignJWT } from "jose";
import { LRUCache } from "lru-cache";
import { createHash, hkdfSync, timingSafeEqual } from "node:crypto";
import { loadSecret } from "../runtime/secret-file.ts";

/** Options of {@link MeshCredentials}. */
export interface MeshCredentialsOptions {
  /** The secret every service of the mesh shares; signs service tokens (HS256). At least 32 characters. */
  meshKey: string;
  /** The operator token that OPERATOR methods accept. At least 32 characters. */
  operatorToken: string;
  /** This service's name, the subject of the service tokens it makes. */
  service: string;
  /** How long a service token is valid. */
  tokenTtlSeconds?: number;
}

/** Who a call's `authorization` metadata says the caller is. */
export type Caller =
  | { kind: "none" }
  | { kind: "operator" }
  | { kind: "mesh"; service: string }
  /** Looks like a user's access token (not verified here: TENANT methods verify it). */
  | { kind: "user" }
  | { kind: "unknown" };

const audience = "tenantry-mesh";
const tokenType = "tenantry-mesh+jwt";

/**
 * The credentials of one service process: it makes short-lived service
 * tokens for its own mesh calls, and tells operator tokens, service tokens
 * and anything else apart on incoming calls.
 */
export class MeshCredentials {
  readonly service: string;
  readonly #key: Uint8Array;
  readonly #operatorDigest: Buffer;
  readonly #ttlSeconds: number;
  /** Service tokens already verified, with their expiry (ms), so a call costs a lookup. */
  readonly #verified = new LRUCache<string, { service: string; expiresAt: number }>({ max: 1000 });
  #current: { token: string; renewAt: number } | undefined;

  constructor(options: MeshCredentialsOptions) {
    if (options.meshKey.length < 32) {
      throw new Error("the mesh key must have at least 32 characters");
    }
    if (options.operatorToken.length < 32) {
      throw new Error("the operator token must have at least 32 characters");
    }
    this.service = options.service;
    this.#key = new TextEncoder().encode(options.meshKey);
    this.#operatorDigest = digest(options.operatorToken);
    this.#ttlSeconds = options.tokenTtlSeconds ?? 300;
  }

  /** A service token for this service's own calls; renewed well before it expires. */
  async serviceToken(): Promise<string> {
    const now = Date.now();
    if (this.#current === undefined || now >= this.#current.renewAt) {
      const token = await new SignJWT({})
        .setProtectedHeader({ alg: "HS256", typ: tokenType })
        .setSubject(this.service)
        .setAudience(audience)
        .setIssuedAt()
        .setExpirationTime(`${this.#ttlSeconds}s`)
        .sign(this.#key);
      this.#current = { token, renewAt: now + (this.#ttlSeconds * 1000) / 2 };
    }
    return this.#current.token;
  }

  /** Identifies the caller from the value of an `authorization` header. */
  async identify(authorization: string | null): Promise<Caller> {
    if (authorization === null || authorization === "") {
      return { kind: "none" };
    }
    const match = /^Bearer\s+(\S+)$/i.exec(authorization);
    if (match === null) {
      return { kind: "unknown" };
    }
    const token = match[1]!;
    if (timingSafeEqual(digest(token), this.#operatorDigest)) {
      return { kind: "operator" };
    }
    const known = this.#verified.get(token);
    if (known !== undefined && known.expiresAt > Date.now()) {
      return { kind: "mesh", service: known.service };
    }
    if (token.split(".").length !== 3) {
      return { kind: "unknown" };
    }
    if (looksLikeUserToken(token)) {
      return { kind: "user" };
    }
    try {
      const { payload } = await jwtVerify(token, this.#key, { algorithms: ["HS256"], audience, typ: tokenType, requiredClaims: ["sub", "exp"] });
      const service = payload.sub!;
      this.#verified.set(token, { service, expiresAt: payload.exp! * 1000 });
      return { kind: "mesh", service };
    } catch {
      return { kind: "unknown" };
    }
  }

  /**
   * A 32-byte key for one purpose, derived from the mesh key (HKDF-SHA256),
   * so that the mesh key itself signs nothing but service tokens.
   */
  derivedKey(purpose: string): Uint8Array {
    return new Uint8Array(hkdfSync("sha256", this.#key, new Uint8Array(0), `tenantry ${purpose}`, 32));
  }

  /** A client interceptor that attaches this service's token to every mesh call. */
  clientInterceptor(): Interceptor {
    return (next) => async (req) => {
      req.header.set("authorization", `Bearer ${await this.serviceToken()}`);
      return next(req);
    };
  }
}

/** A client interceptor that attaches an operator token to every call (for operator tools and tests). */
export function operatorCredentialInterceptor(operatorToken: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${operatorToken}`);
    return next(req);
  };
}

function looksLikeUserToken(token: string): boolean {
  try {
    return decodeProtectedHeader(token).typ === "at+jwt";
  } catch {
    return false;
  }
}

function digest(value: string): Buffer {
  return createHash("sha256").update(value).digest();
}

/** The credential settings every service reads (see `commonEnv`). */
export interface CredentialSettings {
  TENANTRY_ENV: "development" | "production";
  TENANTRY_DATA_DIR: string;
  TENANTRY_MESH_KEY?: string | undefined;
  TENANTRY_OPERATOR_TOKEN?: string | undefined;
}

/**
 * Loads a service's credentials: the mesh key and the operator token from
 * the environment, else from `mesh.key` and `operator.token` in the data
 * directory (generated there on first start, except in production).
 */
export async function loadMeshCredentials(config: CredentialSettings, service: string): Promise<MeshCredentials> {
  const generate = config.TENANTRY_ENV !== "production";
  const [meshKey, operatorToken] = await Promise.all([
    loadSecret({ value: config.TENANTRY_MESH_KEY, dataDir: config.TENANTRY_DATA_DIR, file: "mesh.key", generate }),
    loadSecret({ value: config.TENANTRY_OPERATOR_TOKEN, dataDir: config.TENANTRY_DATA_DIR, file: "operator.token", generate }),
  ]);
  return new MeshCredentials({ meshKey: meshKey.value, operatorToken: operatorToken.value, service });
}
