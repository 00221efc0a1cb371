import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { base64url, generateKeyPair, SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthService } from "../../../gen/tenantry/auth/v1/auth_service_pb.js";
import { EntryService } from "../../../gen/tenantry/backend/v1/entry_service_pb.js";
import { TestAccessTokens } from "../../testing/access-tokens.ts";
import { allPermissions } from "../../testing/declared-catalog.ts";
import { startTestMesh, type TestMesh } from "../../testing/test-mesh.ts";
import { createGrpcJsTransport, type GrpcJsTransport } from "../client/grpc-transport.ts";

let mesh: TestMesh;
let transports: GrpcJsTransport[];
let entries: ReturnType<typeof createClient<typeof EntryService>>;
let auth: ReturnType<typeof createClient<typeof AuthService>>;
let tenantId: string;
const owner = { email: "owner@example.com", password: "correct horse battery" };

beforeAll(async () => {
  mesh = await startTestMesh();
  tenantId = mesh.uniqueTenantId("tokens");
  await mesh.createTenant({ tenantId, owner });
  transports = [createGrpcJsTransport({ address: `127.0.0.1:${mesh.backend.grpcPort}` }), createGrpcJsTransport({ address: `127.0.0.1:${mesh.auth.grpcPort}` })];
  entries = createClient(EntryService, transports[0]!);
  auth = createClient(AuthService, transports[1]!);
});
afterAll(async () => {
  transports?.forEach((t) => t.close());
  await mesh?.stop();
});

function as(token: string) {
  return { headers: { "x-tenant-id": tenantId, authorization: `Bearer ${token}` } };
}

async function code(call: Promise<unknown>): Promise<string> {
  return call.then(() => "ok", (e: unknown) => Code[ConnectError.from(e).code]);
}

describe("user access tokens", () => {
  it("let a user who logged in with Auth call Backend, which checks the token itself", async () => {
    const { entry } = await entries.createEntry({ title: "signed in" }, as(await mesh.login(tenantId, owner)));
    expect(entry?.title).toBe("signed in");
    expect(await code(entries.listEntries({}, { headers: { "x-tenant-id": tenantId } }))).toBe("Unauthenticated");
  });

  it("grant only the permissions they carry", async () => {
    const reader = await mesh.accessTokens.token(tenantId, { permissions: ["entries.read"] });
    expect(await code(entries.listEntries({}, as(reader)))).toBe("ok");
    const refused = await entries.createEntry({ title: "no" }, as(reader)).catch((e: unknown) => ConnectError.from(e));
    expect((refused as ConnectError).code).toBe(Code.PermissionDenied);
    expect((refused as ConnectError).rawMessage).toMatch(/needs permission "entries.write"/);
    expect(await code(entries.listEntries({}, as(await mesh.accessTokens.token(tenantId, { permissions: [] }))))).toBe("PermissionDenied");
  });

  it("refuse forged, unsigned, misissued and expired tokens", async () => {
    const { privateKey } = await generateKeyPair("EdDSA", { crv: "Ed25519" });
    const { jwks } = await auth.getJwks({}, { headers: { "x-tenant-id": tenantId } });
    const realKid = (JSON.parse(jwks) as { keys: { kid: string }[] }).keys[0]!.kid;
    const claims = { tid: tenantId, permissions: allPermissions };
    const forged = await new SignJWT(claims).setProtectedHeader({ alg: "EdDSA", kid: realKid, typ: "at+jwt" }).setIssuer("tenantry").setSubject("x").setIssuedAt().setExpirationTime("5m").sign(privateKey);
    const unknownKid = await new SignJWT(claims).setProtectedHeader({ alg: "EdDSA", kid: "not-a-key", typ: "at+jwt" }).setIssuer("tenantry").setSubject("x").setIssuedAt().setExpirationTime("5m").sign(privateKey);
    const encode = (value: object) => base64url.encode(JSON.stringify(value));
    const now = Math.floor(Date.now() / 1000);
    const unsigned = `${encode({ alg: "none", typ: "at+jwt" })}.${encode({ ...claims, iss: "tenantry", sub: "x", iat: now, exp: now + 300 })}.`;
    const misissued = await new TestAccessTokens({ dataDir: mesh.sharedEnv.TENANTRY_DATA_DIR!, issuer: "someone-else", locate: async () => {
      const { route } = await mesh.platformMeshClient.resolveTenant({ tenantId });
      return { host: route!.host, port: route!.port, database: route!.database, user: route!.user, password: route!.password };
    } }).token(tenantId);
    const expired = await mesh.accessTokens.token(tenantId, { expiresIn: "-1s" });
    for (const [name, token] of Object.entries({ forged, unknownKid, unsigned, misissued, expired, garbage: "a.b.c" })) {
      expect([name, await code(entries.createEntry({ title: name }, as(token)))]).toEqual([name, "Unauthenticated"]);
    }
    expect(await mesh.sql(`tenant_${tenantId.replaceAll("-", "_")}`, "select 1 from backend.entries where title in ('forged', 'unknownKid', 'unsigned', 'misissued', 'expired', 'garbage')")).toEqual([]);
  });
});
