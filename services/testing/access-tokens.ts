import type { Interceptor } from "@connectrpc/connect";
import { generateKeyPair, importPKCS8, SignJWT, type CryptoKey } from "jose";
import { readFile } from "node:fs/promises";
import path from "node:path";
import pg from "pg";
import { randomUUID } from "node:crypto";
import { isTenantId, SecretBox, tenantIdHeader } from "../mesh/index.ts";
import { allPermissions } from "./declared-catalog.ts";

/**
 * A client interceptor that gives every call naming a well-formed tenant
 * the token `tokenOf` makes for it, unless the call carries one.
 */
export function tenantTokenInterceptor(tokenOf: (tenantId: string) => string | Promise<string>): Interceptor {
  return (next) => async (req) => {
    const tenantId = req.header.get(tenantIdHeader);
    if (tenantId !== null && isTenantId(tenantId) && !req.header.has("authorization")) {
      req.header.set("authorization", `Bearer ${await tokenOf(tenantId)}`);
    }
    return next(req);
  };
}

/** How to reach a tenant's data: a connection, and for a pooled tenant the role to take on and its schemas' prefix. */
export type TenantLocation = pg.ClientConfig & { sessionRole?: string; schemaPrefix?: string };

/**
 * Access tokens for tests, signed with a tenant's real key (read from its
 * database and opened with the mesh's master key), so that the services
 * verify them as they would Auth's. For a tenant without a key, a token
 * signed with a key of no tenant.
 */
export class TestAccessTokens {
  readonly #dataDir: string;
  readonly #locate: (tenantId: string) => Promise<TenantLocation>;
  readonly #issuer: string;
  readonly #keys = new Map<string, Promise<{ kid: string; key: CryptoKey; real: boolean }>>();
  readonly #tokens = new Map<string, Promise<string>>();

  /** `locate` says how to reach a tenant's database (any role that may read Auth's `signing_keys`). */
  constructor(options: { dataDir: string; locate: (tenantId: string) => Promise<TenantLocation>; issuer?: string }) {
    this.#dataDir = options.dataDir;
    this.#locate = options.locate;
    this.#issuer = options.issuer ?? "tenantry";
  }

  /** A token of a user of `tenantId` holding `permissions` (default all), valid 15 minutes. */
  token(tenantId: string, options: { permissions?: string[]; userId?: string; expiresIn?: string } = {}): Promise<string> {
    const permissions = options.permissions ?? allPermissions;
    const cacheKey = `${tenantId}\0${permissions.join(",")}\0${options.userId ?? ""}\0${options.expiresIn ?? ""}`;
    let token = this.#tokens.get(cacheKey);
    if (token === undefined) {
      token = this.#sign(tenantId, permissions, options.userId ?? randomUUID(), options.expiresIn ?? "15m");
      this.#tokens.set(cacheKey, token);
      // A tenant found later (Platform was down, say) gets a real token then.
      void this.#keyOf(tenantId).then(({ real }) => real || this.#tokens.delete(cacheKey));
    }
    return token;
  }

  /** A client interceptor that gives every call naming a tenant a token with every permission, unless it has one. */
  interceptor(): Interceptor {
    return tenantTokenInterceptor((tenantId) => this.token(tenantId));
  }

  async #sign(tenantId: string, permissions: string[], userId: string, expiresIn: string): Promise<string> {
    const { kid, key } = await this.#keyOf(tenantId);
    return new SignJWT({ tid: tenantId, permissions })
      .setProtectedHeader({ alg: "EdDSA", kid, typ: "at+jwt" })
      .setIssuer(this.#issuer)
      .setSubject(userId)
      .setIssuedAt()
      .setExpirationTime(expiresIn)
      .setJti(randomUUID())
      .sign(key);
  }

  #keyOf(tenantId: string): Promise<{ kid: string; key: CryptoKey; real: boolean }> {
    let key = this.#keys.get(tenantId);
    if (key === undefined) {
      key = this.#load(tenantId);
      this.#keys.set(tenantId, key);
      void key.then(({ real }) => real || this.#keys.delete(tenantId));
    }
    return key;
  }

  async #load(tenantId: string): Promise<{ kid: string; key: CryptoKey; real: boolean }> {
    let client: pg.Client | undefined;
    try {
      const { sessionRole, schemaPrefix, ...config } = await this.#locate(tenantId);
      client = new pg.Client(config);
      await client.connect();
      if (sessionRole !== undefined && sessionRole !== "") {
        await client.query(`set role ${pg.escapeIdentifier(sessionRole)}`);
      }
      const { rows } = await client.query<{ kid: string; private_key: Buffer }>(
        `select kid, private_key from ${pg.escapeIdentifier(`${schemaPrefix ?? ""}auth`)}.signing_keys where retired_at is null order by created_at desc limit 1`,
      );
      const row = rows[0];
      if (row === undefined) {
        throw new Error("no key");
      }
      const box = new SecretBox((await readFile(path.join(this.#dataDir, "master.key"), "utf8")).trim());
      return { kid: row.kid, key: await importPKCS8(box.open(row.private_key, `tenant:${tenantId}:signing-key:${row.kid}`), "EdDSA"), real: true };
    } catch {
      const { privateKey } = await generateKeyPair("EdDSA", { crv: "Ed25519" });
      return { kid: "no-tenant-key", key: privateKey, real: false };
    } finally {
      await client?.end().catch(() => undefined);
    }
  }
}
