import { createClient } from "@connectrpc/connect";
import { once } from "node:events";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthService } from "../gen/tenantry/auth/v1/auth_service_pb.js";
import { EntryService } from "../gen/tenantry/backend/v1/entry_service_pb.js";
import { Placement, PlatformService } from "../gen/tenantry/platform/v1/platform_service_pb.js";
import { createGrpcJsTransport, MeshCredentials, operatorCredentialInterceptor, type GrpcJsTransport } from "../services/mesh/index.ts";
import { registry } from "../services/registry.ts";
import { startMeshProcesses, type MeshProcesses } from "../services/testing/mesh-processes.ts";

/** A span as OTLP/JSON carries it, with the service that sent it. */
interface ReceivedSpan {
  service: string;
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  attributes: Record<string, unknown>;
}

const SERVER = 2;
const CLIENT = 3;

/** An OTLP/HTTP receiver (JSON encoding), as a collector would run. */
async function startReceiver() {
  const spans: ReceivedSpan[] = [];
  const bodies: string[] = [];
  const headers: http.IncomingHttpHeaders[] = [];
  const server = http.createServer(async (req, res) => {
    let body = "";
    for await (const chunk of req) {
      body += chunk;
    }
    bodies.push(body);
    headers.push(req.headers);
    if (req.url === "/v1/traces") {
      for (const resourceSpans of JSON.parse(body).resourceSpans ?? []) {
        const service = attributesOf(resourceSpans.resource?.attributes)["service.name"] as string;
        for (const scopeSpans of resourceSpans.scopeSpans ?? []) {
          for (const span of scopeSpans.spans ?? []) {
            spans.push({ service, traceId: span.traceId, spanId: span.spanId, parentSpanId: span.parentSpanId || undefined, name: span.name, kind: span.kind, attributes: attributesOf(span.attributes) });
          }
        }
      }
    }
    res.writeHead(200, { "content-type": "application/json" }).end("{}");
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return { spans, bodies, headers, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => server.close() };
}

function attributesOf(list: { key: string; value: Record<string, unknown> }[] = []): Record<string, unknown> {
  return Object.fromEntries(list.map(({ key, value }) => [key, Object.values(value)[0]]));
}

async function eventually<T>(find: () => T | undefined, what: string, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = find();
    if (found !== undefined) {
      return found;
    }
    if (Date.now() > deadline) {
      throw new Error(`never saw ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

let receiver: Awaited<ReturnType<typeof startReceiver>>;

/** Backend's span of a tenant's CreateEntry, once exported. */
function createEntrySpan(id: string): ReceivedSpan | undefined {
  return receiver.spans.find((s) => s.service === "tenantry-backend" && s.name === "tenantry.backend.v1.EntryService/CreateEntry" && s.attributes["tenant.id"] === id);
}
let mesh: MeshProcesses;
const transports: GrpcJsTransport[] = [];
const tenantId = `traced-${Date.now().toString(36)}`;
/** A tenant of the other placement, with one entry: a schema of its own in a pool database. */
const pooledTenantId = `${tenantId}-pooled`;
const ownerPassword = "a long owner password 7f3c";
let accessToken = "";
let refreshToken = "";
let rolePassword = "";
let poolPassword = "";

beforeAll(async () => {
  receiver = await startReceiver();
  mesh = await startMeshProcesses({
    env: {
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
      OTEL_EXPORTER_OTLP_HEADERS: "x-collector-key=k1",
      OTEL_BSP_SCHEDULE_DELAY: "100",
      TENANTRY_LOG_LEVEL: "debug",
    },
  });
  const transport = (port: number, interceptors = [operatorCredentialInterceptor(mesh.sharedEnv.TENANTRY_OPERATOR_TOKEN!)]) => {
    const t = createGrpcJsTransport({ address: `127.0.0.1:${port}`, interceptors });
    transports.push(t);
    return t;
  };
  const platform = createClient(PlatformService, transport(mesh.platform.grpcPort));
  await platform.createTenant({ tenantId, displayName: "Traced", ownerEmail: "owner@traced.example", ownerPassword });
  const auth = createClient(AuthService, transport(mesh.auth.grpcPort, []));
  const headers = { "x-tenant-id": tenantId };
  ({ accessToken, refreshToken } = await auth.login({ email: "owner@traced.example", password: ownerPassword }, { headers }));
  const entries = createClient(EntryService, transport(mesh.backend.grpcPort, []));
  const withToken = { headers: { ...headers, authorization: `Bearer ${accessToken}` } };
  const { entry } = await entries.createEntry({ title: "traced entry" }, withToken);
  await entries.getEntry({ id: entry!.id }, withToken);
  await platform.createTenant({ tenantId: pooledTenantId, displayName: "Traced, pooled", ownerEmail: "owner@traced.example", ownerPassword, placement: Placement.POOLED });
  const pooledHeaders = { "x-tenant-id": pooledTenantId };
  const pooledToken = (await auth.login({ email: "owner@traced.example", password: ownerPassword }, { headers: pooledHeaders })).accessToken;
  await entries.createEntry({ title: "traced pooled entry" }, { headers: { ...pooledHeaders, authorization: `Bearer ${pooledToken}` } });
  const meshCredentials = new MeshCredentials({ meshKey: mesh.sharedEnv.TENANTRY_MESH_KEY!, operatorToken: mesh.sharedEnv.TENANTRY_OPERATOR_TOKEN!, service: "test" });
  const platformMesh = createClient(PlatformService, transport(mesh.platform.grpcPort, [meshCredentials.clientInterceptor()]));
  rolePassword = (await platformMesh.resolveTenant({ tenantId })).route!.password;
  poolPassword = (await platformMesh.resolveTenant({ tenantId: pooledTenantId })).route!.password;
}, 120_000);

afterAll(async () => {
  transports.forEach((t) => t.close());
  await mesh?.stop();
  receiver?.close();
});

describe("tracing", () => {
  it("exports over OTLP with the configured protocol and headers, each service under its own name", async () => {
    await eventually(() => (new Set(receiver.spans.map((s) => s.service)).size === registry.length ? true : undefined), "spans of every service");
    expect(new Set(receiver.spans.map((s) => s.service))).toEqual(new Set(registry.map((s) => `tenantry-${s.name}`)));
    expect(receiver.headers.every((h) => h["x-collector-key"] === "k1" && h["content-type"] === "application/json")).toBe(true);
  });

  it("follows one call from Platform through Backend to PostgreSQL in one trace", async () => {
    const created = await eventually(
      () => receiver.spans.find((s) => s.service === "tenantry-platform" && s.kind === SERVER && s.name === "tenantry.platform.v1.PlatformService/CreateTenant"),
      "CreateTenant's server span",
    );
    expect(created.attributes).toMatchObject({ "rpc.system": "grpc", "rpc.service": "tenantry.platform.v1.PlatformService", "rpc.method": "CreateTenant", "rpc.grpc.status_code": 0 });
    const migrate = await eventually(
      () => receiver.spans.find((s) => s.service === "tenantry-backend" && s.kind === SERVER && s.traceId === created.traceId && s.name === "tenantry.schema.v1.TenantSchemaService/Migrate"),
      "Backend's Migrate span in CreateTenant's trace",
    );
    const caller = receiver.spans.find((s) => s.spanId === migrate.parentSpanId);
    expect(caller).toMatchObject({ service: "tenantry-platform", kind: CLIENT, traceId: created.traceId });
    const sql = await eventually(
      () => receiver.spans.find((s) => s.service === "tenantry-backend" && s.traceId === created.traceId && s.name.startsWith("pg.")),
      "Backend's SQL spans in CreateTenant's trace",
    );
    expect(sql.traceId).toBe(created.traceId);
  });

  it("marks each call's span with its tenant, the tenant's placement, and the SQL it ran beneath it", async () => {
    for (const [id, placement] of [
      [tenantId, "dedicated"],
      [pooledTenantId, "pooled"],
    ]) {
      const create = await eventually(() => createEntrySpan(id), `CreateEntry's span of ${id}`);
      expect(create.attributes).toMatchObject({ "tenant.id": id, "tenant.placement": placement });
      const children = await eventually(
        () => {
          const found = receiver.spans.filter((s) => s.parentSpanId === create.spanId && s.name.startsWith("pg."));
          return found.length > 0 ? found : undefined;
        },
        `SQL spans under CreateEntry of ${id}`,
      );
      expect(children.map((s) => s.attributes["db.query.text"] ?? s.attributes["db.statement"]).join("\n")).toMatch(/insert into "entries"/i);
    }
  });
});

describe("logs", () => {
  it("are JSON lines, and a line about a call carries its trace id, span id and tenant id", async () => {
    const create = await eventually(() => createEntrySpan(tenantId), "CreateEntry's span");
    const lines = mesh.backend
      .output()
      .split("\n")
      .filter((line) => line.startsWith("{"))
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    const line = lines.find((l) => l.procedure === "tenantry.backend.v1.EntryService/CreateEntry" && l.tenant_id === tenantId);
    expect(line).toMatchObject({ service: "backend", trace_id: create.traceId, span_id: create.spanId, tenant_id: tenantId, code: "OK", msg: "call" });
  });

  it("never carry a secret, nor do the exported spans, even at debug level", async () => {
    const secrets = {
      "operator token": mesh.sharedEnv.TENANTRY_OPERATOR_TOKEN!,
      "mesh key": mesh.sharedEnv.TENANTRY_MESH_KEY!,
      "master key": mesh.sharedEnv.TENANTRY_MASTER_KEY!,
      "owner password": ownerPassword,
      "access token": accessToken,
      "refresh token": refreshToken,
      "tenant role password": rolePassword,
      "pool login password": poolPassword,
    };
    const written = {
      "platform log": mesh.platform.output(),
      "auth log": mesh.auth.output(),
      "backend log": mesh.backend.output(),
      "exported spans": receiver.bodies.join("\n"),
    };
    expect(written["backend log"].length).toBeGreaterThan(0);
    for (const [where, text] of Object.entries(written)) {
      for (const [name, secret] of Object.entries(secrets)) {
        expect(secret.length, name).toBeGreaterThan(8);
        expect(text.includes(secret), `${name} in ${where}`).toBe(false);
      }
    }
  });
});

describe("metrics", () => {
  it("serves calls, tenants and connections on each HTTP port in the Prometheus format", async () => {
    const scrape = async (port: number) => {
      const res = await fetch(`http://127.0.0.1:${port}/metrics`);
      expect(res.status).toBe(200);
      return res.text();
    };
    // Two tenants, one per placement, each logged in once and with one entry created.
    const backend = await scrape(mesh.backend.httpPort);
    expect(backend).toMatch(/rpc_server_call_duration_count\{[^}]*rpc_method="CreateEntry"[^}]*rpc_grpc_status_code="OK"[^}]*\} 2/);
    expect(backend).toMatch(new RegExp(`tenantry_tenant_call_duration_count\\{tenant="${tenantId}"\\} [1-9]`));
    expect(backend).toMatch(/tenantry_db_connections_open\{service="backend"\} \d+/);
    expect(backend).toMatch(/tenantry_db_cold_opens_total\{service="backend"\} [1-9]/);
    const platform = await scrape(mesh.platform.httpPort);
    expect(platform).toMatch(/tenantry_tenants\{status="active"\} 2/);
    expect(platform).toMatch(/tenantry_fleet_tenants\{service="backend",state="current"\} 2/);
    expect(platform).toMatch(/tenantry_fleet_migrations_running 0/);
    const auth = await scrape(mesh.auth.httpPort);
    expect(auth).toMatch(/rpc_server_call_duration_count\{[^}]*rpc_method="Login"[^}]*\} 2/);
  });
});
