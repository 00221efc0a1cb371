import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { createLocalJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthService } from "../../gen/tenantry/auth/v1/auth_service_pb.js";
import { RoleService } from "../../gen/tenantry/auth/v1/role_service_pb.js";
import { UserService } from "../../gen/tenantry/auth/v1/user_service_pb.js";
import { EntryService } from "../../gen/tenantry/backend/v1/entry_service_pb.js";
import { PlatformService, TenantStatus, Tier, type Placement } from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import { accessOf, AccessKind, createGrpcJsTransport, operatorCredentialInterceptor, type GrpcJsTransport } from "../mesh/index.ts";
import { allPermissions, permissionsOfDefaultRole } from "../testing/declared-catalog.ts";
import { failure } from "../testing/failure.ts";
import { placements } from "../testing/placements.ts";
import { startTestMesh, type TestMesh } from "../testing/test-mesh.ts";
import { defaultRoles, ownerRole } from "./permission-catalog.ts";

let mesh: TestMesh;
let transport: GrpcJsTransport;
let auth: ReturnType<typeof createClient<typeof AuthService>>;
const password = "correct horse battery";
beforeAll(async () => {
  mesh = await startTestMesh({ platformEnv: { TENANTRY_SIGNUP_LIMIT_PER_HOUR: "2" } });
  transport = createGrpcJsTransport({ address: `127.0.0.1:${mesh.auth.grpcPort}` });
  auth = createClient(AuthService, transport);
});
afterAll(async () => {
  transport?.close();
  await mesh?.stop();
});

async function tenantWithOwner(placement: Placement, email = "Owner@Example.com") {
  const tenantId = mesh.uniqueTenantId("auth");
  const { tenant } = await mesh.platformClient.createTenant({ tenantId, ownerEmail: email, ownerPassword: password, placement });
  return { tenant: tenant!, headers: { headers: { "x-tenant-id": tenantId } } };
}

// Each test runs against tenants of both placements, in the one mesh.
describe.each(placements)("tenant bootstrap ($name tenants)", ({ placement }) => {
  it("gives a new tenant every declared permission, its default roles as declared, and its owner, and forgets the owner's password in Platform", async () => {
    const { tenant } = await tenantWithOwner(placement);
    expect(tenant).toMatchObject({ status: TenantStatus.ACTIVE, placement });
    const catalog = await mesh.sqlAs<{ name: string }>(tenant.tenantId, "auth", "select name from permissions order by name");
    expect(catalog.map((p) => p.name)).toEqual([...allPermissions].sort());
    const roles = await mesh.sqlAs<{ name: string; permissions: string[] }>(
      tenant.tenantId,
      "auth",
      "select r.name, array_remove(array_agg(rp.permission order by rp.permission), null) as permissions from roles r left join role_permissions rp on rp.role_id = r.id group by r.name order by r.name",
    );
    expect(roles).toEqual(Object.keys(defaultRoles).sort().map((name) => ({ name, permissions: permissionsOfDefaultRole(name) })));
    expect(roles.find((r) => r.name === ownerRole)?.permissions).toEqual([...allPermissions].sort());
    const [owner] = await mesh.sqlAs<{ email: string; password_hash: string }>(tenant.tenantId, "auth", "select email, password_hash from users");
    expect(owner!.email).toBe("Owner@Example.com");
    expect(owner!.password_hash).toMatch(/^\$argon2id\$/);
    const [record] = await mesh.sql<{ owner_password: Buffer | null }>(mesh.platformDatabase, "select owner_password from platform.tenants where id = $1", [tenant.tenantId]);
    expect(record!.owner_password).toBeNull();
    const [key] = await mesh.sqlAs<{ private_key: Buffer }>(tenant.tenantId, "auth", "select private_key from signing_keys");
    expect(key!.private_key.includes(Buffer.from("PRIVATE KEY"))).toBe(false);
  });

  it("refuses a malformed owner before anything is made", async () => {
    const tenantId = mesh.uniqueTenantId("bad-owner");
    expect((await failure(mesh.platformClient.createTenant({ tenantId, ownerEmail: "nobody", ownerPassword: password, placement }))).code).toBe(Code.InvalidArgument);
    expect((await failure(mesh.platformClient.createTenant({ tenantId, ownerEmail: "a@b.example", ownerPassword: "short", placement }))).code).toBe(Code.InvalidArgument);
    expect((await failure(mesh.platformClient.getTenant({ tenantId }))).code).toBe(Code.NotFound);
  });
});

describe.each(placements)("sign-in ($name tenants)", ({ placement }) => {
  it("logs the owner in with any letter case of the email, and signs tokens with the tenant's published key", async () => {
    const { tenant, headers } = await tenantWithOwner(placement);
    const tokens = await auth.login({ email: "owner@EXAMPLE.com", password }, headers);
    expect(tokens.expiresIn).toBe(900);
    const { jwks } = await auth.getJwks({}, headers);
    const { payload, protectedHeader } = await jwtVerify(tokens.accessToken, createLocalJWKSet(JSON.parse(jwks)), { issuer: "tenantry" });
    expect(protectedHeader).toMatchObject({ alg: "EdDSA", typ: "at+jwt" });
    expect(payload).toMatchObject({ tid: tenant.tenantId, permissions: expect.arrayContaining(allPermissions) });
    expect(typeof payload.jti).toBe("string");
    expect(payload.exp! - payload.iat!).toBe(900);
    // Another tenant's key set does not hold this token's key.
    const other = await tenantWithOwner(placement);
    const { jwks: otherJwks } = await auth.getJwks({}, other.headers);
    expect(JSON.parse(otherJwks).keys.map((k: { kid: string }) => k.kid)).not.toContain(decodeProtectedHeader(tokens.accessToken).kid);
  });

  it("answers a wrong password and an unknown email alike, and throttles repeated failures", async () => {
    const { headers } = await tenantWithOwner(placement);
    const wrong = await failure(auth.login({ email: "owner@example.com", password: "not the password" }, headers));
    const unknown = await failure(auth.login({ email: "nobody@example.com", password: "not the password" }, headers));
    expect([wrong.code, wrong.rawMessage]).toEqual([unknown.code, unknown.rawMessage]);
    expect(wrong.code).toBe(Code.Unauthenticated);
    for (let i = 0; i < 4; i++) {
      await failure(auth.login({ email: "owner@example.com", password: "still wrong" }, headers));
    }
    const throttled = await failure(auth.login({ email: "owner@example.com", password }, headers));
    expect(throttled.code).toBe(Code.ResourceExhausted);
    // Another email of the same tenant is not held up.
    expect((await failure(auth.login({ email: "someone@example.com", password }, headers))).code).toBe(Code.Unauthenticated);
  });

  it("rotates refresh tokens, and a reused one ends the whole sign-in", async () => {
    const { headers } = await tenantWithOwner(placement);
    const first = await auth.login({ email: "owner@example.com", password }, headers);
    const second = await auth.refresh({ refreshToken: first.refreshToken }, headers);
    expect(second.refreshToken).not.toBe(first.refreshToken);
    expect(decodeJwt(second.accessToken).sub).toBe(decodeJwt(first.accessToken).sub);
    const third = await auth.refresh({ refreshToken: second.refreshToken }, headers);
    // The first token again: stolen, say. Refused, and the family with it.
    expect((await failure(auth.refresh({ refreshToken: first.refreshToken }, headers))).code).toBe(Code.Unauthenticated);
    expect((await failure(auth.refresh({ refreshToken: third.refreshToken }, headers))).code).toBe(Code.Unauthenticated);
    // Another sign-in is untouched, until it logs out.
    const other = await auth.login({ email: "owner@example.com", password }, headers);
    await auth.logout({ refreshToken: other.refreshToken }, headers);
    expect((await failure(auth.refresh({ refreshToken: other.refreshToken }, headers))).code).toBe(Code.Unauthenticated);
    expect((await failure(auth.refresh({ refreshToken: "made-up" }, headers))).code).toBe(Code.Unauthenticated);
  });

  it("needs the tenant, and works over Connect too", async () => {
    expect((await failure(auth.login({ email: "owner@example.com", password }))).code).toBe(Code.InvalidArgument);
    const { headers } = await tenantWithOwner(placement);
    const connect = createClient(AuthService, createConnectTransport({ baseUrl: `http://127.0.0.1:${mesh.auth.httpPort}`, httpVersion: "1.1" }));
    const tokens = await connect.login({ email: "owner@example.com", password }, headers);
    expect(tokens.accessToken.split(".")).toHaveLength(3);
  });
});

// Sign-up takes no placement: STANDARD's, as Platform is configured. Platform restarts with it,
// and with a new count of sign-ups per source address.
describe.each(placements)("sign-up (STANDARD tenants $name)", ({ name, placement }) => {
  beforeAll(() => mesh.restartPlatform({ TENANTRY_TIER_PLACEMENTS: `standard=${name}` }));

  it("creates a STANDARD tenant in its tier's placement whose owner can log in, for anyone, a few times per source address", async () => {
    const anonymous = createClient(PlatformService, createGrpcJsTransport({ address: `127.0.0.1:${mesh.platform.grpcPort}` }));
    const overConnect = createClient(PlatformService, createConnectTransport({ baseUrl: `http://127.0.0.1:${mesh.platform.httpPort}`, httpVersion: "1.1" }));
    const tenantId = mesh.uniqueTenantId("signup");
    expect((await failure(anonymous.signUp({ tenantId }))).code).toBe(Code.InvalidArgument);
    const { tenant } = await overConnect.signUp({ tenantId, displayName: "Signed Up", ownerEmail: "founder@example.com", ownerPassword: password });
    expect(tenant).toMatchObject({ tenantId, tier: Tier.STANDARD, status: TenantStatus.ACTIVE, displayName: "Signed Up", placement });
    const tokens = await auth.login({ email: "founder@example.com", password }, { headers: { "x-tenant-id": tenantId } });
    expect(tokens.accessToken).not.toBe("");
    // Both attempts counted, whichever listener they came through.
    const limited = await failure(anonymous.signUp({ tenantId: mesh.uniqueTenantId("signup"), ownerEmail: "late@example.com", ownerPassword: password }));
    expect(limited.code).toBe(Code.ResourceExhausted);
    const { events } = await mesh.platformClient.listAuditEvents({ tenantId });
    expect(events.map((e) => [e.action, e.actor])).toEqual([["SignUp", "public"]]);
    expect(JSON.parse(events[0]!.detail)).toMatchObject({ source: "127.0.0.1", ownerEmail: "founder@example.com" });
  });
});

describe.each(placements)("tokens across the mesh ($name tenants)", ({ placement }) => {
  // Users of a tenant of their own: the owner, and one user per other default role.
  let tenantId: string;
  let ownerToken: string;
  const transports: GrpcJsTransport[] = [];
  const transportTo = (port: number) => {
    const t = createGrpcJsTransport({ address: `127.0.0.1:${port}` });
    transports.push(t);
    return t;
  };
  let users: Client<typeof UserService>;
  const as = (token: string) => ({ headers: { "x-tenant-id": tenantId, authorization: `Bearer ${token}` } });
  const login = async (email: string) => (await auth.login({ email, password }, { headers: { "x-tenant-id": tenantId } })).accessToken;
  const code = (call: Promise<unknown>) => call.then(() => "ok", (e: unknown) => Code[ConnectError.from(e).code]);

  beforeAll(async () => {
    users = createClient(UserService, transportTo(mesh.auth.grpcPort));
    ({ tenant: { tenantId } } = await tenantWithOwner(placement, "owner@example.com"));
    ownerToken = await login("owner@example.com");
  });
  afterAll(() => transports.forEach((t) => t.close()));

  it("lets each default role call exactly the methods its permissions allow, on Auth and Backend", async () => {
    const tokens: Record<string, string> = {};
    for (const role of Object.keys(defaultRoles)) {
      if (role !== ownerRole) {
        await users.createUser({ email: `${role}@example.com`, password, roles: [role] }, as(ownerToken));
      }
      tokens[role] = role === ownerRole ? ownerToken : await login(`${role}@example.com`);
    }
    const services: [DescService, number][] = [
      [EntryService, mesh.backend.grpcPort],
      [UserService, mesh.auth.grpcPort],
      [RoleService, mesh.auth.grpcPort],
      [AuthService, mesh.auth.grpcPort],
    ];
    let checked = 0;
    let tenantMethods = 0;
    for (const [service, port] of services) {
      const client = createClient(service, transportTo(port)) as unknown as Record<string, (req: object, options: object) => Promise<unknown>>;
      for (const method of service.methods) {
        const { kind, permission } = accessOf(method);
        if (kind !== AccessKind.TENANT) {
          continue;
        }
        tenantMethods++;
        for (const role of Object.keys(defaultRoles)) {
          // Empty requests: allowed calls fail on their arguments, never on access.
          const outcome = await code(client[method.localName]!({}, as(tokens[role]!)));
          const allowed = permission === "" || permissionsOfDefaultRole(role).includes(permission);
          expect([service.typeName, method.name, role, outcome === "PermissionDenied" ? "denied" : outcome === "Unauthenticated" ? "unauthenticated" : "allowed"]).toEqual([
            service.typeName,
            method.name,
            role,
            allowed ? "allowed" : "denied",
          ]);
          checked++;
        }
      }
    }
    expect(tenantMethods).toBeGreaterThan(0);
    expect(checked).toBe(Object.keys(defaultRoles).length * tenantMethods);
  });

  it("rotates a tenant's signing key, still accepting tokens of the previous key until they expire", async () => {
    const before = await login("owner@example.com");
    const operator = createClient(AuthService, createGrpcJsTransport({ address: `127.0.0.1:${mesh.auth.grpcPort}`, interceptors: [operatorCredentialInterceptor(mesh.operatorToken)] }));
    const { kid } = await operator.rotateSigningKey({ tenantId });
    const after = await login("owner@example.com");
    const kidOf = (token: string) => JSON.parse(Buffer.from(token.split(".")[0]!, "base64url").toString()).kid as string;
    expect(kidOf(after)).toBe(kid);
    expect(kidOf(before)).not.toBe(kid);
    const published = JSON.parse((await auth.getJwks({}, { headers: { "x-tenant-id": tenantId } })).jwks).keys.map((k: { kid: string }) => k.kid);
    expect(published).toEqual([kid, kidOf(before)]);
    // Backend learns the new key on its first token signed with it, and keeps the previous.
    expect(await code(mesh.entries.listEntries({}, as(after)))).toBe("ok");
    expect(await code(mesh.entries.listEntries({}, as(before)))).toBe("ok");
    // Two rotations on, the first key is retired.
    await operator.rotateSigningKey({ tenantId });
    await operator.rotateSigningKey({ tenantId });
    await new Promise((resolve) => setTimeout(resolve, 1100));
    expect(await code(mesh.entries.listEntries({}, as(await login("owner@example.com"))))).toBe("ok");
    expect(await code(mesh.entries.listEntries({}, as(before)))).toBe("Unauthenticated");
  });
});

