import { createClient, type Client } from "@connectrpc/connect";
import type { MigrationObject } from "@mikro-orm/core";
import pg from "pg";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { EntryService } from "../../gen/tenantry/backend/v1/entry_service_pb.js";
import { PlatformService, type Tenant } from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import { startAuth } from "../auth/auth.ts";
import { readAuthConfig } from "../auth/config.ts";
import { startBackend } from "../backend/backend.ts";
import { readBackendConfig } from "../backend/config.ts";
import {
  createGrpcJsTransport,
  createLogger,
  MeshCredentials,
  operatorCredentialInterceptor,
  readConfig,
  startTelemetry,
  telemetryEnv,
  type GrpcJsTransport,
  type MeshServer,
  type TenantService,
} from "../mesh/index.ts";
import { readPlatformConfig } from "../platform/config.ts";
import { startPlatform, type PlatformHooks } from "../platform/platform.ts";
import { TestAccessTokens } from "./access-tokens.ts";
import { freePort } from "./free-port.ts";
import { TestServer } from "./test-server.ts";

/** Options of {@link startTestMesh}; values are environment variables of the services. */
export interface TestMeshOptions {
  /** Extra settings for Backend (and Auth). */
  tenantServiceEnv?: Record<string, string>;
  /** Extra settings for Platform. */
  platformEnv?: Record<string, string>;
  /** Extra schema services Platform should call, as name=host:port. */
  extraSchemaServices?: string;
  /** Superuser URL of the PostgreSQL server to use instead of the tests' shared one (a server a spec restarts). */
  serverUrl?: string;
}

/** Platform, Auth and Backend running in this process on free ports, against the tests' PostgreSQL. */
export interface TestMesh {
  /** Platform as started last (see `restartPlatform`). */
  platform: MeshServer;
  /** The environment Platform runs with, for running it as a process of its own. */
  platformProcessEnv: Record<string, string>;
  /** Stops the in-process Platform (if running) and starts it again, with extra settings. */
  restartPlatform(env?: Record<string, string>, hooks?: PlatformHooks): Promise<void>;
  /** Starts Backend again on the same ports, with other migrations (a newer version of it). */
  restartBackend(migrations?: MigrationObject[]): Promise<void>;
  /** Stops the in-process Platform, so that another may take its port. */
  stopPlatform(): Promise<void>;
  /** Auth as started last (see `restartAuth`). */
  auth: TenantService;
  /** Stops Auth (if running), so that calls to it find nothing listening. */
  stopAuth(): Promise<void>;
  /** Starts Auth again on the same port, after `stopAuth`. */
  restartAuth(): Promise<void>;
  backend: TenantService;
  /** Superuser URL of a database on the tests' server. */
  databaseUrl(database: string): string;
  /** The name of this mesh's platform database. */
  platformDatabase: string;
  /** A PlatformService client over grpc-js, with the operator token. */
  platformClient: Client<typeof PlatformService>;
  /** A PlatformService client over grpc-js, with a service token (for MESH methods). */
  platformMeshClient: Client<typeof PlatformService>;
  /** The settings every service of this mesh shares: data dir, mesh key, operator token. */
  sharedEnv: Record<string, string>;
  /** The operator token. */
  operatorToken: string;
  /** Credentials of a service of this mesh named "test", for mesh calls from tests. */
  meshCredentials: MeshCredentials;
  /** Access tokens signed with tenants' real keys. */
  accessTokens: TestAccessTokens;
  /** An EntryService client over grpc-js on Backend's gRPC port; calls naming a tenant get a token with every permission. */
  entries: Client<typeof EntryService>;
  /** A tenant id no other test uses. */
  uniqueTenantId(prefix?: string): string;
  /** Provisions a tenant through Platform. */
  createTenant(tenantId?: string): Promise<Tenant>;
  /** Runs SQL as the superuser in a database of the tests' server. */
  sql<R extends pg.QueryResultRow = Record<string, unknown>>(database: string, text: string, values?: unknown[]): Promise<R[]>;
  stop(): Promise<void>;
}

/** Starts the whole mesh in-process, with its own platform database. */
export async function startTestMesh(options: TestMeshOptions = {}): Promise<TestMesh> {
  const server = new TestServer(options.serverUrl);
  const databaseUrl = server.databaseUrl.bind(server);
  const suffix = randomBytes(4).toString("hex");
  const platformDatabase = `tenantry_platform_${suffix}`;
  const log = createLogger("test", process.env.TENANTRY_LOG_LEVEL ?? "silent");
  // The services share this process, and so its telemetry.
  const telemetry = startTelemetry({ service: "test", tenantSeries: readConfig(telemetryEnv).TENANTRY_METRICS_TENANT_SERIES });
  const platformPort = await freePort();
  const dataDir = await mkdtemp(path.join(os.tmpdir(), "tenantry-mesh-"));
  const operatorToken = randomBytes(32).toString("base64url");
  const sharedEnv = {
    TENANTRY_DATA_DIR: dataDir,
    TENANTRY_MESH_KEY: randomBytes(32).toString("base64url"),
    TENANTRY_OPERATOR_TOKEN: operatorToken,
  };
  const meshCredentials = new MeshCredentials({ meshKey: sharedEnv.TENANTRY_MESH_KEY, operatorToken, service: "test" });
  const authPort = await freePort();
  const tenantEnv = {
    ...sharedEnv,
    TENANTRY_AUTH_ADDRESS: `127.0.0.1:${authPort}`,
    TENANTRY_GRPC_PORT: "0",
    TENANTRY_HTTP_PORT: "0",
    TENANTRY_PLATFORM_ADDRESS: `127.0.0.1:${platformPort}`,
    TENANTRY_CORS_ORIGINS: "http://allowed.example",
    ...options.tenantServiceEnv,
  };
  const launchAuth = () => startAuth(readAuthConfig({ ...tenantEnv, TENANTRY_GRPC_PORT: String(authPort) }), log.child({ service: "auth" }), telemetry);
  let auth: TenantService | undefined = await launchAuth();
  const backendPort = await freePort();
  const launchBackend = (migrations?: MigrationObject[]) =>
    startBackend(readBackendConfig({ ...tenantEnv, TENANTRY_GRPC_PORT: String(backendPort) }), log.child({ service: "backend" }), telemetry, { migrations });
  let backend = await launchBackend();
  const schemaServices = [`auth=127.0.0.1:${authPort}`, `backend=127.0.0.1:${backend.grpcPort}`, ...(options.extraSchemaServices ? [options.extraSchemaServices] : [])];
  const platformProcessEnv: Record<string, string> = {
    ...sharedEnv,
    TENANTRY_GRPC_PORT: String(platformPort),
    TENANTRY_HTTP_PORT: "0",
    TENANTRY_DATABASE_URL: databaseUrl(platformDatabase),
    TENANTRY_SCHEMA_SERVICES: schemaServices.join(","),
    ...options.platformEnv,
  };
  const launchPlatform = (env: Record<string, string> = {}, hooks: PlatformHooks = {}) =>
    startPlatform(readPlatformConfig({ ...platformProcessEnv, ...env }), log.child({ service: "platform" }), telemetry, hooks);
  let platform: MeshServer | undefined = await launchPlatform();
  const transports: GrpcJsTransport[] = [];
  const transport = (port: number, interceptors = [operatorCredentialInterceptor(operatorToken)]) => {
    const t = createGrpcJsTransport({ address: `127.0.0.1:${port}`, interceptors });
    transports.push(t);
    return t;
  };
  const platformClient = createClient(PlatformService, transport(platformPort));
  const platformMeshClient = createClient(PlatformService, transport(platformPort, [meshCredentials.clientInterceptor()]));
  const accessTokens = new TestAccessTokens({
    dataDir,
    // Through Platform's route, so that tenants on any cluster are found.
    locate: async (tenantId) => {
      const { route } = await platformMeshClient.resolveTenant({ tenantId });
      return { host: route!.host, port: route!.port, database: route!.database, user: route!.user, password: route!.password };
    },
  });
  const entries = createClient(EntryService, transport(backend.grpcPort, [accessTokens.interceptor()]));
  let counter = 0;
  const uniqueTenantId = (prefix = "t") => `${prefix}-${suffix}-${++counter}`;

  const restartBackend = async (migrations?: MigrationObject[]) => {
    await backend.shutdown();
    backend = await launchBackend(migrations);
  };
  const stopPlatform = async () => {
    await platform?.shutdown();
    platform = undefined;
  };
  const stopAuth = async () => {
    await auth?.shutdown();
    auth = undefined;
  };
  return {
    get platform() {
      if (platform === undefined) {
        throw new Error("Platform is stopped");
      }
      return platform;
    },
    get backend() {
      return backend;
    },
    restartBackend,
    platformProcessEnv,
    stopPlatform,
    async restartPlatform(env, hooks) {
      await stopPlatform();
      platform = await launchPlatform(env, hooks);
    },
    get auth() {
      if (auth === undefined) {
        throw new Error("Auth is stopped");
      }
      return auth;
    },
    stopAuth,
    async restartAuth() {
      await stopAuth();
      auth = await launchAuth();
    },
    databaseUrl,
    platformDatabase,
    platformClient,
    platformMeshClient,
    sharedEnv,
    operatorToken,
    meshCredentials,
    accessTokens,
    entries,
    uniqueTenantId,
    async createTenant(tenantId = uniqueTenantId()) {
      const { tenant } = await platformClient.createTenant({ tenantId, displayName: tenantId });
      return tenant!;
    },
    sql: server.sql.bind(server),
    async stop() {
      transports.forEach((t) => t.close());
      await Promise.all([backend.shutdown(), stopAuth(), stopPlatform()]);
      await server.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}
