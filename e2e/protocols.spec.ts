import { createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { execFile } from "node:child_process";
import diagnostics from "node:diagnostics_channel";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Health, HealthCheckResponse_ServingStatus as ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import { EntryService } from "../gen/tenantry/backend/v1/entry_service_pb.js";
import { startTestMesh, type TestMesh } from "../services/testing/test-mesh.ts";

const run = promisify(execFile);

let mesh: TestMesh;
let tenantId: string;
let database: string;
beforeAll(async () => {
  mesh = await startTestMesh();
  ({ tenantId, database } = await mesh.createTenant());
});
afterAll(() => mesh?.stop());

describe("every protocol reaches the same implementation", () => {
  const transports: [string, () => Transport][] = [
    ["Connect over HTTP/1.1", () => createConnectTransport({ baseUrl: `http://127.0.0.1:${mesh.backend.httpPort}`, httpVersion: "1.1", interceptors: [mesh.accessTokens.interceptor()] })],
    ["gRPC-Web over HTTP/1.1", () => createGrpcWebTransport({ baseUrl: `http://127.0.0.1:${mesh.backend.httpPort}`, httpVersion: "1.1", interceptors: [mesh.accessTokens.interceptor()] })],
    ["gRPC over h2c on the HTTP port", () => createGrpcTransport({ baseUrl: `http://127.0.0.1:${mesh.backend.httpPort}`, interceptors: [mesh.accessTokens.interceptor()] })],
    ["Connect over h2c on the HTTP port", () => createConnectTransport({ baseUrl: `http://127.0.0.1:${mesh.backend.httpPort}`, httpVersion: "2", interceptors: [mesh.accessTokens.interceptor()] })],
  ];
  for (const [name, transport] of transports) {
    it(`serves ${name}`, async () => {
      const client = createClient(EntryService, transport());
      const headers = { "x-tenant-id": tenantId };
      const { entry } = await client.createEntry({ title: name }, { headers });
      const read = await client.getEntry({ id: entry!.id }, { headers });
      expect(read.entry?.title).toBe(name);
      const rows = await mesh.sql(database, "select title from backend.entries where id = $1", [entry!.id]);
      expect(rows).toEqual([{ title: name }]);
    });
  }

  it("serves reads as HTTP GET to Connect clients that ask (NO_SIDE_EFFECTS), and writes as POST", async () => {
    const client = createClient(
      EntryService,
      createConnectTransport({ baseUrl: `http://127.0.0.1:${mesh.backend.httpPort}`, httpVersion: "1.1", useHttpGet: true, interceptors: [mesh.accessTokens.interceptor()] }),
    );
    const headers = { "x-tenant-id": tenantId };
    // What reached Backend's HTTP listener (in this process), as Node's HTTP server took it.
    const received: string[] = [];
    const record = (message: unknown) => {
      const { request } = message as { request: { method: string; url: string } };
      received.push(`${request.method} ${request.url.split("?")[0]}`);
    };
    diagnostics.subscribe("http.server.request.start", record);
    try {
      const { entry } = await client.createEntry({ title: "read by GET" }, { headers });
      const read = await client.getEntry({ id: entry!.id }, { headers });
      expect(read.entry?.title).toBe("read by GET");
    } finally {
      diagnostics.unsubscribe("http.server.request.start", record);
    }
    expect(received).toEqual(["POST /tenantry.backend.v1.EntryService/CreateEntry", "GET /tenantry.backend.v1.EntryService/GetEntry"]);
  });

  it("serves grpc-js on the gRPC port", async () => {
    const { entry } = await mesh.entries.createEntry({ title: "grpc-js" }, { headers: { "x-tenant-id": tenantId } });
    expect((await mesh.entries.getEntry({ id: entry!.id }, { headers: { "x-tenant-id": tenantId } })).entry?.title).toBe("grpc-js");
  });

  it("maps errors to the same code on every protocol", async () => {
    for (const [, transport] of transports) {
      const client = createClient(EntryService, transport());
      await expect(client.listEntries({}, { headers: { "x-tenant-id": "no" } })).rejects.toMatchObject({ code: 3 });
    }
  });
});

describe("health and reflection", () => {
  it("answers grpc.health.v1 on both ports and plain /healthz, /readyz", async () => {
    for (const transport of [
      createGrpcTransport({ baseUrl: `http://127.0.0.1:${mesh.backend.grpcPort}` }),
      createConnectTransport({ baseUrl: `http://127.0.0.1:${mesh.backend.httpPort}`, httpVersion: "1.1" }),
    ]) {
      const health = createClient(Health, transport);
      expect((await health.check({ service: "" })).status).toBe(ServingStatus.SERVING);
      expect((await health.check({ service: "tenantry.backend.v1.EntryService" })).status).toBe(ServingStatus.SERVING);
      await expect(health.check({ service: "nope.Service" })).rejects.toMatchObject({ code: 5 });
    }
    expect((await fetch(`http://127.0.0.1:${mesh.backend.httpPort}/healthz`)).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${mesh.backend.httpPort}/readyz`)).status).toBe(200);
  });

  it("lets buf curl list every service and call CreateEntry through reflection, on both ports", async () => {
    for (const port of [mesh.backend.grpcPort, mesh.backend.httpPort]) {
      const listed = await run("node_modules/.bin/buf", ["curl", "--protocol", "grpc", "--http2-prior-knowledge", "--list-services", `http://127.0.0.1:${port}`]);
      expect(listed.stdout.split("\n").filter(Boolean).sort()).toEqual(
        [
          "grpc.health.v1.Health",
          "grpc.reflection.v1.ServerReflection",
          "grpc.reflection.v1alpha.ServerReflection",
          "tenantry.backend.v1.EntryService",
          "tenantry.schema.v1.TenantSchemaService",
        ].sort(),
      );
      const created = await run("node_modules/.bin/buf", [
        "curl",
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        "-H",
        `x-tenant-id: ${tenantId}`,
        "-H",
        `authorization: Bearer ${await mesh.accessTokens.token(tenantId)}`,
        "-d",
        JSON.stringify({ title: `via buf curl on ${port}`, tags: ["cli"] }),
        `http://127.0.0.1:${port}/tenantry.backend.v1.EntryService/CreateEntry`,
      ]);
      const body = JSON.parse(created.stdout) as { entry: { id: string; title: string; tags: string[] } };
      expect(body.entry).toMatchObject({ title: `via buf curl on ${port}`, tags: ["cli"] });
      const read = await mesh.entries.getEntry({ id: body.entry.id }, { headers: { "x-tenant-id": tenantId } });
      expect(read.entry?.title).toBe(`via buf curl on ${port}`);
    }
  });

  it("describes methods through v1alpha reflection too", async () => {
    const described = await run("node_modules/.bin/buf", [
      "curl",
      "--protocol",
      "grpc",
      "--http2-prior-knowledge",
      "--reflect-protocol",
      "grpc-v1alpha",
      "--list-methods",
      `http://127.0.0.1:${mesh.platform.grpcPort}`,
    ]);
    expect(described.stdout).toContain("tenantry.platform.v1.PlatformService/CreateTenant");
  });
});

describe("CORS", () => {
  it("answers a preflight from an allowed origin and refuses any other", async () => {
    const url = `http://127.0.0.1:${mesh.backend.httpPort}/tenantry.backend.v1.EntryService/ListEntries`;
    const allowed = await fetch(url, {
      method: "OPTIONS",
      headers: { origin: "http://allowed.example", "access-control-request-method": "POST", "access-control-request-headers": "x-tenant-id,content-type" },
    });
    expect(allowed.status).toBe(204);
    expect(allowed.headers.get("access-control-allow-origin")).toBe("http://allowed.example");
    expect(allowed.headers.get("access-control-allow-headers")).toMatch(/x-tenant-id/);

    const refused = await fetch(url, { method: "OPTIONS", headers: { origin: "http://evil.example", "access-control-request-method": "POST" } });
    expect(refused.status).toBe(403);
    expect(refused.headers.get("access-control-allow-origin")).toBeNull();

    const call = await fetch(url, {
      method: "POST",
      headers: { origin: "http://allowed.example", "content-type": "application/json", "x-tenant-id": tenantId, authorization: `Bearer ${await mesh.accessTokens.token(tenantId)}` },
      body: "{}",
    });
    expect(call.status).toBe(200);
    expect(call.headers.get("access-control-allow-origin")).toBe("http://allowed.example");
  });
});
