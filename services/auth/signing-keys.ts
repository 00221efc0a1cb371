import type { EntityManager } from "@mikro-orm/postgresql";
import { exportJWK, exportPKCS8, generateKeyPair, importPKCS8, type CryptoKey, type JWK } from "jose";
import { LRUCache } from "lru-cache";
import { randomUUID } from "node:crypto";
import type { SecretBox } from "../mesh/index.ts";

/** A tenant's key for signing access tokens. */
export interface SigningKey {
  kid: string;
  privateKey: CryptoKey;
}

/** A tenant's keys as this process knows them. */
interface TenantKeys {
  current: SigningKey;
  /** Public keys of the current and previous keys, newest first. */
  jwks: { keys: JWK[] };
}

export const signingAlgorithm = "EdDSA";

/**
 * Each tenant's Ed25519 signing keys, in the `signing_keys` table of its Auth
 * schema: private keys sealed with the master key, public keys as JWKs.
 * Kept in memory for a minute per tenant.
 */
export class SigningKeys {
  readonly #box: SecretBox;
  readonly #cache = new LRUCache<string, TenantKeys>({ max: 10_000, ttl: 60_000 });

  constructor(box: SecretBox) {
    this.#box = box;
  }

  /** Creates the tenant's first key unless it has one. Run in the tenant's scope. */
  async ensure(em: EntityManager, tenantId: string): Promise<void> {
    const [row] = await em.execute<{ n: string }[]>("select count(*) as n from signing_keys where retired_at is null");
    if (Number(row!.n) === 0) {
      await this.#create(em, tenantId);
    }
  }

  /** The tenant's current key and published key set. Run in the tenant's scope. */
  async keys(em: EntityManager, tenantId: string): Promise<TenantKeys> {
    let keys = this.#cache.get(tenantId);
    if (keys === undefined) {
      const rows = await em.execute<{ kid: string; public_jwk: JWK | string; private_key: Buffer }[]>(
        "select kid, public_jwk, private_key from signing_keys where retired_at is null order by created_at desc, kid limit 2",
      );
      const newest = rows[0];
      if (newest === undefined) {
        throw new Error(`tenant "${tenantId}" has no signing key: it was not bootstrapped`);
      }
      keys = {
        current: { kid: newest.kid, privateKey: await importPKCS8(this.#box.open(newest.private_key, keyContext(tenantId, newest.kid)), signingAlgorithm) },
        jwks: { keys: rows.map((r) => (typeof r.public_jwk === "string" ? (JSON.parse(r.public_jwk) as JWK) : r.public_jwk)) },
      };
      this.#cache.set(tenantId, keys);
    }
    return keys;
  }

  /**
   * Gives the tenant a new current key; the one it replaces stays published
   * (tokens it signed remain valid until they expire), older ones are retired.
   * Returns the new key's id. Run in the tenant's scope.
   */
  async rotate(em: EntityManager, tenantId: string): Promise<string> {
    return em.transactional(async (tx) => {
      const kid = await this.#create(tx, tenantId);
      await tx.execute(
        `update signing_keys set retired_at = now() where retired_at is null and kid not in
           (select kid from signing_keys where retired_at is null order by created_at desc, kid limit 2)`,
      );
      this.#cache.delete(tenantId);
      return kid;
    });
  }

  /**
   * Replaces every key of a tenant whose database holds a copy of another
   * tenant's (a clone): the copied keys are sealed for the source, so they
   * neither open here nor should they sign for this tenant. Run in the
   * tenant's scope.
   */
  async replaceCopied(em: EntityManager, tenantId: string): Promise<void> {
    await em.transactional(async (tx) => {
      await tx.execute("delete from signing_keys");
      await this.#create(tx, tenantId);
    });
  }

  async #create(em: EntityManager, tenantId: string): Promise<string> {
    const { publicKey, privateKey } = await generateKeyPair(signingAlgorithm, { crv: "Ed25519", extractable: true });
    const kid = randomUUID();
    const jwk = { ...(await exportJWK(publicKey)), kid, alg: signingAlgorithm, use: "sig" };
    const sealed = this.#box.seal(await exportPKCS8(privateKey), keyContext(tenantId, kid));
    await em.execute("insert into signing_keys (kid, public_jwk, private_key, created_at) values (?, ?, ?, clock_timestamp())", [kid, JSON.stringify(jwk), sealed]);
    this.#cache.delete(tenantId);
    return kid;
  }
}

function keyContext(tenantId: string, kid: string): string {
  return `tenant:${tenantId}:signing-key:${kid}`;
}
