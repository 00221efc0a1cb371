import { create, type DescService } from "@bufbuild/protobuf";
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import pg from "pg";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { AuthService } from "../../gen/tenantry/auth/v1/auth_service_pb.js";
import { EntryService } from "../../gen/tenantry/backend/v1/entry_service_pb.js";
import { Placement, TenantRouteSchema, TenantStatus, Tier, type TenantRoute } from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import { startAuth } from "../auth/auth.ts";
import { readAuthConfig } from "../auth/config.ts";
import { startBackend } from "../backend/backend.ts";
import { readBackendConfig } from "../backend/config.ts";
import {
  createGrpcJsTransport,
  createLogger,
  MeshCredentials,
  readConfig,
  startTelemetry,
  telemetryEnv,
  tenantDatabaseName,
  type GrpcJsTransport,
  type Logger,
  type Telemetry,
  type TenantService,
} from "../mesh/index.ts";
import { declaredCatalog } from "./declared-catalog.ts";
import { freePort } from "./free-port.ts";
import { sqlAs } from "./sql-as.ts";
import { StubTenantDirectory, type RouteChange } from "./stub-tenant-directory.ts";
import { StubUserTokens } from "./stub-user-tokens.ts";
import { TestServer } from "./test-server.ts";

/** Options of {@link startSingleBackend} and {@link startSingleAuth}. */
export interface SingleServiceOptions {
  /** Extra settings of the service, as environment variables. */
  env?: Record<string, string>;
}

/** What a new tenant's route says, where it differs from a STANDARD tenant's. */
export interface NewTenantOptions {
  /** Default: an id no other test uses. */
  tenantId?: string;
  tier?: Tier;
  /** Default: STANDARD's 50. */
  maxUsers?: number;
  /** Default: STANDARD's 10 GB. */
  maxStorageBytes?: number;
  /**
   * POOLED: the tenant's role and schema in the service's pool database
   * (made with the first such tenant), reached through the pool's login.
   * Otherwise a database of its own; its route says DEDICATED when asked
   * to, and otherwise names no placement, as a Platform from before
   * placements would.
   */
  placement?: Placement;
}

/**
 * One tenant service running alone in this process, against the tests'
 * PostgreSQL: no Platform, no change feed from it; tenants' routes come from
 * a stub directory, and their databases are made as Platform would make them.
 */
export interface SingleService {
  /** The service as started last (see `restart`). */
  readonly service: TenantService;
  /** Where the service's routes come from. */
  readonly directory: StubTenantDirectory;
  /**
   * Makes a tenant as Platform's provisioning would, without Platform: a
   * login role, a database it owns that no one else may connect to, the
   * service's schema migrated through its own `tenancy.migrate`, and an
   * ACTIVE route. Returns the route. A POOLED tenant gets instead a NOLOGIN
   * role granted to the pool database's login and its schema there, owned
   * by that role.
   */
  createTenant(options?: NewTenantOptions): Promise<TenantRoute>;
  /** Runs SQL in a tenant's schema of the service, as the tenant's role (its own login, or the pool's and SET ROLE). */
  sqlAs<R extends pg.QueryResultRow = Record<string, unknown>>(route: TenantRoute, text: string, values?: unknown[]): Promise<R[]>;
  /** Changes a tenant's route; the service hears of it as from Platform's change feed. */
  changeTenant(tenantId: string, change: RouteChange): TenantRoute;
  /** A client of one of the service's RPC services on its gRPC port (over grpc-js). */
  client<S extends DescService>(service: S, interceptors?: Interceptor[]): Client<S>;
  /** A tenant id no other test uses. */
  uniqueTenantId(prefix?: string): string;
  /** The operator token the service accepts. */
  operatorToken: string;
  /** Superuser URL of a database on the tests' server. */
  databaseUrl(database: string): string;
  /** Runs SQL as the superuser in a database of the tests' server. */
  sql<R extends pg.QueryResultRow = Record<string, unknown>>(database: string, text: string, values?: unknown[]): Promise<R[]>;
  /** Stops the service and starts it again on the same port, with the same settings and tenants. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

/** Backend alone: users' tokens are checked by a stub that grants what they were issued with. */
export interface SingleBackend extends SingleService {
  /** Issues the tokens Backend accepts. */
  tokens: StubUserTokens;
  /** An EntryService client; calls naming a tenant get a token with every permission unless they carry one. */
  entries: Client<typeof EntryService>;
}

/** Auth alone: it checks the tokens it issues against its own key sets, as it does in the mesh. */
export interface SingleAuth extends SingleService {
  /**
   * Makes a tenant as `SingleService.createTenant` does, then has Auth
   * bootstrap it as Platform's provisioning does: the permissions every
   * contract declares, the default roles, a signing key, and an owner when
   * one is given.
   */
  createTenant(options?: NewTenantOptions & { ownerEmail?: string; ownerPassword?: string }): Promise<TenantRoute>;
  /** Credentials of a service of this mesh named "test", for MESH calls from tests (Platform's, such as Migrate). */
  meshCredentials: MeshCredentials;
}

/** What a service run alone is started with. */
interface Launch {
  /** The gRPC port it listens on. */
  grpcPort: number;
  env: Record<string, string>;
  directory: StubTenantDirectory;
  log: Logger;
  telemetry: Telemetry;
}

/** Starts Backend alone (see {@link SingleService}). */
export async function startSingleBackend(options: SingleServiceOptions = {}): Promise<SingleBackend> {
  const tokens = new StubUserTokens();
  const single = await startSingleService("backend", options, ({ grpcPort, env, directory, log, telemetry }) =>
    startBackend(readBackendConfig({ ...env, TENANTRY_GRPC_PORT: String(grpcPort) }), log, telemetry, { tenantRoutes: directory, userTokens: tokens }),
  );
  return Object.assign(single, { tokens, entries: single.client(EntryService, [tokens.interceptor()]) });
}

/** Starts Auth alone (see {@link SingleService}). */
export async function startSingleAuth(options: SingleServiceOptions = {}): Promise<SingleAuth> {
  const single = await startSingleService("auth", options, ({ grpcPort, env, directory, log, telemetry }) =>
    // Auth verifies the tokens it issues with the key sets it serves itself.
    startAuth(readAuthConfig({ ...env, TENANTRY_GRPC_PORT: String(grpcPort), TENANTRY_AUTH_ADDRESS: `127.0.0.1:${grpcPort}` }), log, telemetry, { tenantRoutes: directory }),
  );
  const meshCredentials = new MeshCredentials({ meshKey: single.meshKey, operatorToken: single.operatorToken, service: "test" });
  const auth = single.client(AuthService, [meshCredentials.clientInterceptor()]);
  const createTenant = single.createTenant;
  return Object.assign(single, {
    meshCredentials,
    async createTenant(options: NewTenantOptions & { ownerEmail?: string; ownerPassword?: string } = {}) {
      const route = await createTenant(options);
      await auth.bootstrapTenant({ tenantId: route.tenantId, ownerEmail: options.ownerEmail ?? "", ownerPassword: options.ownerPassword ?? "", permissions: declaredCatalog });
      return route;
    },
  });
}

async function startSingleService(
  name: string,
  options: SingleServiceOptions,
  launch: (launch: Launch) => Promise<TenantService>,
): Promise<SingleService & { meshKey: string }> {
  const server = new TestServer();
  const suffix = randomBytes(4).toString("hex");
  const log = createLogger("test", process.env.TENANTRY_LOG_LEVEL ?? "silent").child({ service: name });
  const telemetry = startTelemetry({ service: "test", tenantSeries: readConfig(telemetryEnv).TENANTRY_METRICS_TENANT_SERIES });
  const dataDir = await mkdtemp(path.join(os.tmpdir(), `tenantry-${name}-`));
  const meshKey = randomBytes(32).toString("base64url");
  const operatorToken = randomBytes(32).toString("base64url");
  const env = { TENANTRY_DATA_DIR: dataDir, TENANTRY_MESH_KEY: meshKey, TENANTRY_OPERATOR_TOKEN: operatorToken, TENANTRY_HTTP_PORT: "0", ...options.env };
  const grpcPort = await freePort();
  const directory = new StubTenantDirectory();
  const start = () => launch({ grpcPort, env, directory, log, telemetry });
  let service = await start();
  const transports: GrpcJsTransport[] = [];
  let counter = 0;
  /** The pool database of this service's pooled tenants, made with the first of them. */
  let poolDatabase: Promise<PoolDatabase> | undefined;
  const uniqueTenantId = (prefix = "t") => `${prefix}-${suffix}-${++counter}`;

  return {
    get service() {
      return service;
    },
    directory,
    meshKey,
    operatorToken,
    uniqueTenantId,
    async createTenant({ tenantId = uniqueTenantId(), tier = Tier.STANDARD, maxUsers = 50, maxStorageBytes = 10 * 1024 ** 3, placement } = {}) {
      if (placement === Placement.POOLED) {
        const pool = await (poolDatabase ??= makePoolDatabase(server, `tenantry_pool_${name}_${suffix}`));
        const role = tenantDatabaseName(tenantId);
        const schemaPrefix = `t_${tenantId.replaceAll("-", "_")}_`;
        await server.sql("postgres", `create role ${pg.escapeIdentifier(role)} nologin`);
        await server.sql("postgres", `grant ${pg.escapeIdentifier(role)} to ${pg.escapeIdentifier(pool.role)} with inherit false, set true`);
        await server.sql(pool.database, `create schema ${pg.escapeIdentifier(schemaPrefix + name)} authorization ${pg.escapeIdentifier(role)}`);
        const route = create(TenantRouteSchema, {
          tenantId,
          status: TenantStatus.ACTIVE,
          tier,
          host: server.url.hostname,
          port: Number(server.url.port),
          database: pool.database,
          user: pool.role,
          password: pool.password,
          maxUsers,
          maxStorageBytes: BigInt(maxStorageBytes),
          placement: Placement.POOLED,
          sessionRole: role,
          schemaPrefix,
        });
        await service.tenancy.migrate(route);
        directory.set(route);
        return route;
      }
      // As Platform names and secures them (see its provisioning steps).
      const database = tenantDatabaseName(tenantId);
      const role = database;
      const password = randomBytes(24).toString("base64url");
      await server.sql("postgres", `create role ${pg.escapeIdentifier(role)} login password ${pg.escapeLiteral(password)}`);
      await server.sql("postgres", `create database ${pg.escapeIdentifier(database)} owner ${pg.escapeIdentifier(role)}`);
      await server.sql("postgres", `revoke connect, temporary on database ${pg.escapeIdentifier(database)} from public`);
      const route = create(TenantRouteSchema, {
        tenantId,
        status: TenantStatus.ACTIVE,
        tier,
        host: server.url.hostname,
        port: Number(server.url.port),
        database,
        user: role,
        password,
        maxUsers,
        maxStorageBytes: BigInt(maxStorageBytes),
        placement,
      });
      await service.tenancy.migrate(route);
      directory.set(route);
      return route;
    },
    changeTenant: (tenantId, change) => directory.change(tenantId, change),
    sqlAs: <R extends pg.QueryResultRow>(route: TenantRoute, text: string, values?: unknown[]) => sqlAs<R>(route, name, text, values),
    client(descriptor, interceptors = []) {
      const transport = createGrpcJsTransport({ address: `127.0.0.1:${grpcPort}`, interceptors });
      transports.push(transport);
      return createClient(descriptor, transport);
    },
    databaseUrl: server.databaseUrl.bind(server),
    sql: server.sql.bind(server),
    async restart() {
      await service.shutdown();
      service = await start();
    },
    async stop() {
      transports.forEach((t) => t.close());
      await service.shutdown();
      await server.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** A pool database of pooled tenants, and its login. */
interface PoolDatabase {
  database: string;
  role: string;
  password: string;
}

/**
 * Makes a pool database as the pooled placement lays one out: its own login
 * role (NOINHERIT: it acts only through SET ROLE), no one else may connect,
 * nobody may create in `public`, and the login's path is `pg_catalog`.
 */
async function makePoolDatabase(server: TestServer, name: string): Promise<PoolDatabase> {
  const password = randomBytes(24).toString("base64url");
  const id = pg.escapeIdentifier(name);
  await server.sql("postgres", `create role ${id} login noinherit password ${pg.escapeLiteral(password)}`);
  await server.sql("postgres", `create database ${id}`);
  await server.sql("postgres", `revoke all on database ${id} from public`);
  await server.sql("postgres", `grant connect on database ${id} to ${id}`);
  await server.sql(name, "revoke all on schema public from public");
  await server.sql("postgres", `alter role ${id} in database ${id} set search_path = pg_catalog`);
  return { database: name, role: name, password };
}
