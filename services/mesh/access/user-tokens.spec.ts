import { Code, ConnectError } from "@connectrpc/connect";
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from "jose";
import { afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { UserTokens } from "./user-tokens.ts";

interface SigningKey {
  kid: string;
  privateKey: CryptoKey;
  jwk: object;
}

async function signingKey(kid: string): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair("EdDSA", { crv: "Ed25519", extractable: true });
  return { kid, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg: "EdDSA", use: "sig" } };
}

function token(key: SigningKey, claims: { tid: string; expiresIn?: string }): Promise<string> {
  return new SignJWT({ tid: claims.tid, permissions: ["entries.read"] })
    .setProtectedHeader({ alg: "EdDSA", kid: key.kid, typ: "at+jwt" })
    .setIssuer("tenantry")
    .setSubject("user-1")
    .setIssuedAt()
    .setExpirationTime(claims.expiresIn ?? "5m")
    .sign(key.privateKey);
}

/** UserTokens over a key set that the test changes, counting the fetches. */
function userTokens(keys: { current: SigningKey[] }, options: { keySetTtlMs?: number } = {}) {
  const fetched: string[] = [];
  const tokens = new UserTokens({
    issuer: "tenantry",
    ...options,
    fetchKeySet: async (tenantId) => {
      fetched.push(tenantId);
      return { jwks: JSON.stringify({ keys: keys.current.map((k) => k.jwk) }), permissions: ["entries.read"] };
    },
  });
  return { tokens, fetched };
}

async function failure(call: Promise<unknown>): Promise<{ code: string; message: string }> {
  const error = await call.then(
    () => undefined,
    (e: unknown) => ConnectError.from(e),
  );
  return error === undefined ? { code: "OK", message: "" } : { code: Code[error.code], message: error.rawMessage };
}

let first: SigningKey;
let second: SigningKey;
beforeAll(async () => {
  [first, second] = await Promise.all([signingKey("k1"), signingKey("k2")]);
});
afterEach(() => {
  vi.useRealTimers();
});

describe("user tokens", () => {
  it("verify a token again from memory, for the tenant it was issued for only", async () => {
    const { tokens } = userTokens({ current: [first] });
    const acme = await token(first, { tid: "acme" });
    const user = await tokens.verify(acme, "acme");
    expect(user).toMatchObject({ userId: "user-1", tenantId: "acme" });
    expect([...user.permissions]).toEqual(["entries.read"]);
    expect(await tokens.verify(acme, "acme")).toEqual(user);
    expect(await failure(tokens.verify(acme, "globex"))).toEqual({ code: "PermissionDenied", message: 'the access token is for another tenant than "globex"' });
  });

  it("remember only tokens that passed", async () => {
    const { tokens } = userTokens({ current: [first] });
    const acme = await token(first, { tid: "acme" });
    const forged = await token(second, { tid: "acme" });
    expect(tokens.remembers(acme)).toBe(false);
    await tokens.verify(acme, "acme");
    expect(await failure(tokens.verify(forged, "acme"))).toMatchObject({ code: "Unauthenticated" });
    expect(tokens.remembers(acme)).toBe(true);
    expect(tokens.remembers(forged)).toBe(false);
  });

  it("refuse a remembered token once it has expired", async () => {
    vi.useFakeTimers({ toFake: ["Date"] });
    const { tokens } = userTokens({ current: [first] });
    const short = await token(first, { tid: "acme", expiresIn: "10s" });
    expect(await failure(tokens.verify(short, "acme"))).toEqual({ code: "OK", message: "" });
    vi.setSystemTime(Date.now() + 9_000);
    expect(await failure(tokens.verify(short, "acme"))).toEqual({ code: "OK", message: "" });
    vi.setSystemTime(Date.now() + 2_000);
    expect(await failure(tokens.verify(short, "acme"))).toEqual({ code: "Unauthenticated", message: "the access token is not valid (expired): log in again" });
  });

  it("check remembered tokens again once a rotation has changed the tenant's key set", async () => {
    const keys = { current: [first] };
    const { tokens, fetched } = userTokens(keys);
    const old = await token(first, { tid: "acme" });
    await tokens.verify(old, "acme");
    // The tenant's keys rotate and the old key is withdrawn: a token of the new key makes the set be fetched again.
    keys.current = [second];
    await tokens.verify(await token(second, { tid: "acme" }), "acme");
    expect(fetched).toEqual(["acme", "acme"]);
    expect(await failure(tokens.verify(old, "acme"))).toMatchObject({ code: "Unauthenticated" });
  });

  it("keep remembered tokens when the key set is fetched again with the same keys", async () => {
    vi.useFakeTimers({ toFake: ["Date"] });
    const keys = { current: [first] };
    const { tokens, fetched } = userTokens(keys);
    const acme = await token(first, { tid: "acme" });
    await tokens.verify(acme, "acme");
    // A catalog lookup fetches the set again: nothing about the keys changed.
    vi.setSystemTime(Date.now() + 1000);
    expect(await tokens.catalogHolds("acme", "entries.write")).toBe(false);
    expect(fetched).toEqual(["acme", "acme"]);
    expect(await failure(tokens.verify(acme, "acme"))).toEqual({ code: "OK", message: "" });
  });

  it("verify the tokens of more tenants than it keeps key lookups for, each tenant's against its own keys", async () => {
    const keysOf: Record<string, SigningKey[]> = { acme: [first], globex: [second] };
    const fetched: string[] = [];
    const tokens = new UserTokens({
      issuer: "tenantry",
      maxKeyLookups: 1,
      fetchKeySet: async (tenantId) => {
        fetched.push(tenantId);
        return { jwks: JSON.stringify({ keys: keysOf[tenantId]!.map((k) => k.jwk) }), permissions: ["entries.read"] };
      },
    });
    const acme = await token(first, { tid: "acme" });
    await tokens.verify(acme, "acme");
    // Globex's lookup takes the only place: acme's is made again from its kept key set, which is not fetched again.
    await tokens.verify(await token(second, { tid: "globex" }), "globex");
    expect(await failure(tokens.verify(await token(first, { tid: "acme", expiresIn: "6m" }), "acme"))).toEqual({ code: "OK", message: "" });
    // Signed by another key under the name of acme's.
    const impostor = await signingKey("k1");
    expect(await failure(tokens.verify(await token(impostor, { tid: "acme" }), "acme"))).toEqual({ code: "Unauthenticated", message: "the access token is not valid (bad signature): log in again" });
    expect(await failure(tokens.verify(acme, "acme"))).toEqual({ code: "OK", message: "" });
    // Acme's keys rotate while globex holds the lookup: acme's remembered token is checked again, and refused.
    keysOf.acme = [second];
    await tokens.verify(await token(second, { tid: "globex", expiresIn: "7m" }), "globex");
    await tokens.verify(await token(second, { tid: "acme", expiresIn: "8m" }), "acme");
    expect(await failure(tokens.verify(acme, "acme"))).toMatchObject({ code: "Unauthenticated" });
    expect(fetched).toEqual(["acme", "globex", "acme"]);
  });

  it("give users with the same permissions one set of them", async () => {
    const { tokens } = userTokens({ current: [first] });
    const one = await tokens.verify(await token(first, { tid: "acme" }), "acme");
    const other = await tokens.verify(await token(first, { tid: "acme", expiresIn: "6m" }), "acme");
    expect(other.permissions).toBe(one.permissions);
    expect([...other.permissions]).toEqual(["entries.read"]);
  });

  it("check remembered tokens against the key set fetched after it was kept its time", async () => {
    const keys = { current: [first] };
    const { tokens } = userTokens(keys, { keySetTtlMs: 200 });
    const acme = await token(first, { tid: "acme" });
    await tokens.verify(acme, "acme");
    keys.current = [second];
    expect(await failure(tokens.verify(acme, "acme"))).toEqual({ code: "OK", message: "" });
    await new Promise((resolve) => setTimeout(resolve, 250));
    expect(await failure(tokens.verify(acme, "acme"))).toMatchObject({ code: "Unauthenticated" });
  });
});
