import type { DescService } from "@bufbuild/protobuf";
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import type { MigrationObject } from "@mikro-orm/core";
import pg from "pg";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { AuthService } from "../../gen/tenantry/auth/v1/auth_service_pb.js";
import { EntryService } from "../../gen/tenantry/backend/v1/entry_service_pb.js";
import { PlatformService, type Placement, type Tenant } from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import {
  createGrpcJsTransport,
  createLogger,
  MeshCredentials,
  operatorCredentialInterceptor,
  readConfig,
  startTelemetry,
  telemetryEnv,
  tenantIdHeader,
  type GrpcJsTransport,
  type Logger,
  type MeshServer,
  type Telemetry,
  type TenantService,
} from "../mesh/index.ts";
import type { PlatformHooks } from "../platform/platform.ts";
import type { ServiceStart } from "../registry.ts";
import { TestAccessTokens } from "./access-tokens.ts";
import { planMesh, schemaServices, type PlannedService, type UnregisteredService } from "./mesh-plan.ts";
import { sqlAs } from "./sql-as.ts";
import { TestServer } from "./test-server.ts";

const root = fileURLToPath(new URL("../..", import.meta.url));

/** A service under test that is not in services/registry.ts, started in this process beside the registered ones. */
export interface ServiceUnderTest extends UnregisteredService {
  /** Starts it from its settings, as a registered service's start.ts does. */
  start: ServiceStart;
}

/** Options of {@link startTestMesh}; settings are environment variables of the services. */
export interface TestMeshOptions {
  /** The registered services to run besides Platform, which always runs (see services/registry.ts); by default every one but those of `addedLater`. */
  services?: string[];
  /**
   * One more service, not in the registry: it gets ports and the mesh's
   * settings like the others, and Platform migrates its schema on every
   * tenant it makes when it owns one.
   */
  serviceUnderTest?: ServiceUnderTest;
  /**
   * Registered services that start only when `addService` adds them, as
   * services registered after the tenants made before that: Platform
   * migrates their schemas from then on.
   */
  addedLater?: string[];
  /** Extra settings for every service but Platform. */
  tenantServiceEnv?: Record<string, string>;
  /**
   * Platform's TENANTRY_TIER_PLACEMENTS: by default every tier dedicated
   * (see `testTierPlacements` in mesh-plan.ts); null for Platform's own
   * defaults (STANDARD pooled).
   */
  tierPlacements?: string | null;
  /** Extra settings for Platform. */
  platformEnv?: Record<string, string>;
  /** Superuser URL of the PostgreSQL server to use instead of the tests' shared one (a server a spec restarts). */
  serverUrl?: string;
}

/** A user of a tenant, by the credentials they log in with. */
export interface TenantUser {
  email: string;
  password: string;
}

/** What {@link TestMesh.createTenant} makes; by default a tenant with an id no other test uses and no users. */
export interface NewTenant {
  tenantId?: string;
  /** Its owner (every permission), made as the tenant is provisioned; `login` gives their access token. */
  owner?: TenantUser;
  /** Where its data goes; by default its tier's placement (dedicated for every tier unless the mesh's `tierPlacements` says otherwise). */
  placement?: Placement;
  /** The cluster it goes to; by default the one Platform chooses (the accepting one with most room). */
  cluster?: string;
}

/** Platform and the other services running in this process on free ports, against the tests' PostgreSQL. */
export interface TestMesh {
  /** A service of the mesh as started last; throws when it is stopped or not in this mesh. */
  service(name: string): MeshServer;
  /** Stops a service (if running), so that calls to it find nothing listening. */
  stopService(name: string): Promise<void>;
  /**
   * Starts a service of `addedLater` and restarts Platform with its schema
   * among those it migrates, as deploying a newly registered service does:
   * tenants made before are behind on it (and on Auth, for the permissions
   * it declares) until MigrateTenants brings them current.
   */
  addService(name: string): Promise<void>;
  /**
   * Stops a service (if running) and starts it again on the same gRPC port,
   * with extra settings and the service's own overrides (those its start takes).
   */
  restartService(name: string, options?: { env?: Record<string, string>; overrides?: unknown }): Promise<void>;
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
  /**
   * A client of an RPC service that a service of the mesh serves, over
   * grpc-js on its gRPC port. By default, calls naming a tenant get a token
   * with every permission unless they carry one.
   */
  client<S extends DescService>(name: string, descriptor: S, interceptors?: Interceptor[]): Client<S>;
  /** The settings every service of this mesh shares: data dir, mesh key, operator token. */
  sharedEnv: Record<string, string>;
  /** The operator token. */
  operatorToken: string;
  /** Credentials of a service of this mesh named "test", for mesh calls from tests. */
  meshCredentials: MeshCredentials;
  /** Access tokens signed with tenants' real keys, with the permissions asked for (`accessTokens.token`). */
  accessTokens: TestAccessTokens;
  /** An EntryService client over grpc-js on Backend's gRPC port; calls naming a tenant get a token with every permission. */
  entries: Client<typeof EntryService>;
  /** A tenant id no other test uses. */
  uniqueTenantId(prefix?: string): string;
  /** Provisions a tenant through Platform, with its owner when one is given. */
  createTenant(tenant?: NewTenant): Promise<Tenant>;
  /** Logs a user of a tenant in through Auth's Login; returns their access token. */
  login(tenantId: string, user: TenantUser): Promise<string>;
  /** Runs SQL as the superuser in a database of the tests' server. */
  sql<R extends pg.QueryResultRow = Record<string, unknown>>(database: string, text: string, values?: unknown[]): Promise<R[]>;
  /**
   * Runs SQL in a tenant's schema of a service as the tenant's role, by the
   * route Platform resolves (see `sqlAs` in sql-as.ts): the same unqualified
   * SQL for a dedicated tenant and a pooled one.
   */
  sqlAs<R extends pg.QueryResultRow = Record<string, unknown>>(tenantId: string, service: string, text: string, values?: unknown[]): Promise<R[]>;
  stop(): Promise<void>;
}

/** A service's start as the mesh calls it: the overrides are the service's own, passed on as given. */
type Start = (env: NodeJS.ProcessEnv, log: Logger, telemetry: Telemetry, overrides?: unknown) => Promise<MeshServer>;

/** A registered service's start, from the start.ts beside its main. */
async function registeredStart(service: PlannedService): Promise<Start> {
  const file = path.join(root, path.dirname(service.registered!.main), "start.ts");
  return ((await import(file)) as { start: Start }).start;
}

/**
 * Starts Platform and the registered services asked for (by default all),
 * and the service under test if there is one, in this process with their
 * own platform database, each wired to the others as in production.
 */
export async function startTestMesh(options: TestMeshOptions = {}): Promise<TestMesh> {
  const server = new TestServer(options.serverUrl);
  const databaseUrl = server.databaseUrl.bind(server);
  const suffix = randomBytes(4).toString("hex");
  const platformDatabase = `tenantry_platform_${suffix}`;
  const log = createLogger("test", process.env.TENANTRY_LOG_LEVEL ?? "silent");
  // The services share this process, and so its telemetry.
  const telemetry = startTelemetry({ service: "test", tenantSeries: readConfig(telemetryEnv).TENANTRY_METRICS_TENANT_SERIES });
  const dataDir = await mkdtemp(path.join(os.tmpdir(), "tenantry-mesh-"));
  const operatorToken = randomBytes(32).toString("base64url");
  const sharedEnv = {
    TENANTRY_DATA_DIR: dataDir,
    TENANTRY_MESH_KEY: randomBytes(32).toString("base64url"),
    TENANTRY_OPERATOR_TOKEN: operatorToken,
  };
  const meshCredentials = new MeshCredentials({ meshKey: sharedEnv.TENANTRY_MESH_KEY, operatorToken, service: "test" });
  const planned = new Map<string, PlannedService>();
  const starts = new Map<string, Start>();
  const running = new Map<string, MeshServer>();

  const plannedService = (name: string) => {
    const service = planned.get(name);
    if (service === undefined) {
      throw new Error(`${name} is not in this mesh (it runs ${[...planned.keys()].join(", ")})`);
    }
    return service;
  };
  const startService = async (name: string, { env = {}, overrides }: { env?: Record<string, string>; overrides?: unknown } = {}) => {
    const service = plannedService(name);
    running.set(name, await starts.get(name)!({ ...service.env, ...env }, log.child({ service: name }), telemetry, overrides));
  };
  const stopService = async (name: string) => {
    const service = running.get(name);
    running.delete(name);
    await service?.shutdown();
  };
  const restartService = async (name: string, restart: { env?: Record<string, string>; overrides?: unknown } = {}) => {
    await stopService(name);
    await startService(name, restart);
  };
  const service = (name: string) => {
    const found = running.get(name);
    if (found === undefined) {
      throw new Error(`${plannedService(name).name} is stopped`);
    }
    return found;
  };

  const addedLater = new Set(options.addedLater);
  let plan: PlannedService[] = [];
  try {
    plan = await planMesh({
      services: options.services,
      unregistered: options.serviceUnderTest,
      addedLater: options.addedLater,
      sharedEnv,
      platformDatabaseUrl: databaseUrl(platformDatabase),
      tierPlacements: options.tierPlacements,
      platformEnv: options.platformEnv,
      tenantServiceEnv: { TENANTRY_CORS_ORIGINS: "http://allowed.example", ...options.tenantServiceEnv },
    });
    for (const service of plan) {
      planned.set(service.name, service);
      starts.set(service.name, service.registered === undefined ? (options.serviceUnderTest!.start as Start) : await registeredStart(service));
    }
    // Platform last: the tenants it resumes as it starts need the others.
    for (const { name } of [...plan.slice(1).filter((s) => !addedLater.has(s.name)), plan[0]!]) {
      await startService(name);
    }
  } catch (error) {
    await Promise.all([...running.keys()].map(stopService));
    await server.close();
    await rm(dataDir, { recursive: true, force: true });
    throw error;
  }

  const transports: GrpcJsTransport[] = [];
  const transport = (name: string, interceptors: Interceptor[]) => {
    const t = createGrpcJsTransport({ address: `127.0.0.1:${plannedService(name).grpcPort}`, interceptors });
    transports.push(t);
    return t;
  };
  const platformClient = createClient(PlatformService, transport("platform", [operatorCredentialInterceptor(operatorToken)]));
  const platformMeshClient = createClient(PlatformService, transport("platform", [meshCredentials.clientInterceptor()]));
  const accessTokens = new TestAccessTokens({
    dataDir,
    // Through Platform's route, so that tenants on any cluster are found.
    locate: async (tenantId) => {
      const { route } = await platformMeshClient.resolveTenant({ tenantId });
      const { host, port, database, user, password, sessionRole, schemaPrefix } = route!;
      return { host, port, database, user, password, sessionRole, schemaPrefix };
    },
  });
  const client = <S extends DescService>(name: string, descriptor: S, interceptors = [accessTokens.interceptor()]) =>
    createClient(descriptor, transport(name, interceptors));
  // Made when first used: a mesh without Backend or Auth has none.
  let entries: Client<typeof EntryService> | undefined;
  let auth: Client<typeof AuthService> | undefined;
  let counter = 0;
  const uniqueTenantId = (prefix = "t") => `${prefix}-${suffix}-${++counter}`;

  return {
    service,
    stopService,
    restartService,
    async addService(name) {
      if (!addedLater.has(name)) {
        throw new Error(`${name} is not among the services this mesh adds later (addedLater: ${[...addedLater].join(", ")})`);
      }
      if (running.has(name)) {
        throw new Error(`${name} is added already`);
      }
      await startService(name);
      // Kept in Platform's planned settings, so that later restarts keep it.
      plannedService("platform").env.TENANTRY_SCHEMA_SERVICES = schemaServices(plan);
      await restartService("platform");
    },
    get platform() {
      return service("platform");
    },
    platformProcessEnv: plannedService("platform").env,
    stopPlatform: () => stopService("platform"),
    restartPlatform: (env, hooks) => restartService("platform", { env, overrides: hooks }),
    get auth() {
      return service("auth") as TenantService;
    },
    stopAuth: () => stopService("auth"),
    restartAuth: () => restartService("auth"),
    get backend() {
      return service("backend") as TenantService;
    },
    restartBackend: (migrations) => restartService("backend", { overrides: { migrations } }),
    databaseUrl,
    platformDatabase,
    platformClient,
    platformMeshClient,
    client,
    sharedEnv,
    operatorToken,
    meshCredentials,
    accessTokens,
    get entries() {
      return (entries ??= client("backend", EntryService));
    },
    uniqueTenantId,
    async createTenant({ tenantId = uniqueTenantId(), owner, placement, cluster }: NewTenant = {}) {
      const { tenant } = await platformClient.createTenant({ tenantId, displayName: tenantId, ownerEmail: owner?.email, ownerPassword: owner?.password, placement, cluster });
      return tenant!;
    },
    async login(tenantId, user) {
      auth ??= client("auth", AuthService, []);
      const { accessToken } = await auth.login(user, { headers: { [tenantIdHeader]: tenantId } });
      return accessToken;
    },
    sql: server.sql.bind(server),
    async sqlAs<R extends pg.QueryResultRow>(tenantId: string, service: string, text: string, values?: unknown[]) {
      const { route } = await platformMeshClient.resolveTenant({ tenantId });
      return sqlAs<R>(route!, service, text, values);
    },
    async stop() {
      transports.forEach((t) => t.close());
      await Promise.all([...running.keys()].map(stopService));
      await server.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}
