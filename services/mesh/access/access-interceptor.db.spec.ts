import { Code, ConnectError, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EntryService } from "../../../gen/tenantry/backend/v1/entry_service_pb.js";
import { PlatformService } from "../../../gen/tenantry/platform/v1/platform_service_pb.js";
import { TenantSchemaService } from "../../../gen/tenantry/schema/v1/tenant_schema_service_pb.js";
import { startTestMesh, type TestMesh } from "../../testing/test-mesh.ts";
import { createGrpcJsTransport } from "../client/grpc-transport.ts";
import { Health } from "../server/health-service.ts";
import { MeshCredentials } from "./credentials.ts";

let mesh: TestMesh;
let tenantId: string;
let otherTenantId: string;
beforeAll(async () => {
  mesh = await startTestMesh();
  ({ tenantId } = await mesh.createTenant());
  ({ tenantId: otherTenantId } = await mesh.createTenant());
});
afterAll(() => mesh?.stop());

type Credential = "none" | "operator" | "mesh" | "garbage" | "foreign mesh" | "expired mesh" | "user" | "expired user" | "other tenant's user";

async function authorization(credential: Credential): Promise<string | undefined> {
  switch (credential) {
    case "none":
      return undefined;
    case "operator":
      return `Bearer ${mesh.operatorToken}`;
    case "mesh":
      return `Bearer ${await mesh.meshCredentials.serviceToken()}`;
    case "garbage":
      return "Bearer not-a-token";
    case "foreign mesh": {
      const other = new MeshCredentials({ meshKey: "k".repeat(40), operatorToken: "o".repeat(40), service: "intruder" });
      return `Bearer ${await other.serviceToken()}`;
    }
    case "user":
      return `Bearer ${await mesh.accessTokens.token(tenantId)}`;
    case "expired user":
      return `Bearer ${await mesh.accessTokens.token(tenantId, { expiresIn: "-1m" })}`;
    case "other tenant's user":
      return `Bearer ${await mesh.accessTokens.token(otherTenantId)}`;
    case "expired mesh": {
      const token = await new SignJWT({})
        .setProtectedHeader({ alg: "HS256", typ: "tenantry-mesh+jwt" })
        .setSubject("test")
        .setAudience("tenantry-mesh")
        .setIssuedAt(Math.floor(Date.now() / 1000) - 600)
        .setExpirationTime(Math.floor(Date.now() / 1000) - 300)
        .sign(new TextEncoder().encode(mesh.sharedEnv.TENANTRY_MESH_KEY));
      return `Bearer ${token}`;
    }
  }
}

function withCredential(credential: Credential): Interceptor {
  return (next) => async (req) => {
    const value = await authorization(credential);
    if (value !== undefined) {
      req.header.set("authorization", value);
    }
    return next(req);
  };
}

async function outcome(call: Promise<unknown>): Promise<Code | "ok"> {
  try {
    await call;
    return "ok";
  } catch (error) {
    return ConnectError.from(error).code;
  }
}

const listeners: [string, (port: { grpc: number; http: number }, credential: Credential) => Transport][] = [
  ["grpc-js", (port, credential) => createGrpcJsTransport({ address: `127.0.0.1:${port.grpc}`, interceptors: [withCredential(credential)] })],
  ["Connect over HTTP/1.1", (port, credential) => createConnectTransport({ baseUrl: `http://127.0.0.1:${port.http}`, httpVersion: "1.1", interceptors: [withCredential(credential)] })],
];

const U = Code.Unauthenticated;
const P = Code.PermissionDenied;
const expected: Record<string, Record<Credential, Code | "ok">> = {
  public: { none: "ok", operator: "ok", mesh: "ok", garbage: "ok", "foreign mesh": "ok", "expired mesh": "ok", user: "ok", "expired user": "ok", "other tenant's user": "ok" },
  tenant: { none: U, operator: P, mesh: P, garbage: U, "foreign mesh": U, "expired mesh": U, user: "ok", "expired user": U, "other tenant's user": P },
  operator: { none: U, operator: "ok", mesh: P, garbage: U, "foreign mesh": U, "expired mesh": U, user: P, "expired user": P, "other tenant's user": P },
  mesh: { none: U, operator: P, mesh: "ok", garbage: U, "foreign mesh": U, "expired mesh": U, user: P, "expired user": P, "other tenant's user": P },
};

describe("access enforcement", () => {
  for (const [listener, transportFor] of listeners) {
    it(`applies the credential matrix on every access kind over ${listener}`, async () => {
      const platformPorts = { grpc: mesh.platform.grpcPort, http: mesh.platform.httpPort };
      const backendPorts = { grpc: mesh.backend.grpcPort, http: mesh.backend.httpPort };
      const seen: Record<string, Record<string, Code | "ok">> = {};
      for (const credential of Object.keys(expected.public!) as Credential[]) {
        const platform = createClient(PlatformService, transportFor(platformPorts, credential));
        const schema = createClient(TenantSchemaService, transportFor(backendPorts, credential));
        const calls: Record<string, () => Promise<unknown>> = {
          public: () => createClient(Health, transportFor(backendPorts, credential)).check({ service: "" }),
          tenant: () => createClient(EntryService, transportFor(backendPorts, credential)).listEntries({}, { headers: { "x-tenant-id": tenantId } }),
          operator: () => platform.listTenants({}),
          mesh: async () => {
            const resolved = await outcome(platform.resolveTenant({ tenantId }));
            const status = await outcome(schema.getSchemaStatus({ tenantId }));
            // Both MESH methods, on two services, answer alike.
            expect(status).toBe(resolved);
            if (resolved !== "ok") {
              throw new ConnectError("refused", resolved);
            }
          },
        };
        for (const [kind, call] of Object.entries(calls)) {
          (seen[kind] ??= {})[credential] = await outcome(call());
        }
      }
      expect(seen).toEqual(expected);
    });
  }

  it("says what credential a refused call needs", async () => {
    const platform = createClient(PlatformService, createGrpcJsTransport({ address: `127.0.0.1:${mesh.platform.grpcPort}` }));
    const error = ConnectError.from(await platform.listTenants({}).catch((e: unknown) => e));
    expect(error.code).toBe(Code.Unauthenticated);
    expect(error.rawMessage).toMatch(/operator credentials.*authorization: Bearer/);
  });
});
