import { Code, ConnectError } from "@connectrpc/connect";
import type { MikroORM } from "@mikro-orm/postgresql";
import pg from "pg";
import { discardLostConnections, type Logger, type SecretBox } from "../mesh/index.ts";
import type { Cluster } from "./entities/cluster.ts";
import { adminPasswordContext, clusterStates, findCluster, upsertCluster, type ClusterRecord, type ClusterStateName } from "./stores/index.ts";

/** A cluster's settings with its admin password opened, for Platform's own connections. */
export type ClusterAccess = ClusterSettings;

/** What registering a cluster takes: its record, with the admin password in the clear. */
export type ClusterSettings = Omit<ClusterRecord, "adminPassword"> & { adminPassword: string };

const clusterName = /^[a-z][a-z0-9-]{0,39}$/;
const region = /^[a-z0-9-]{0,40}$/;

/**
 * The clusters (PostgreSQL servers holding tenant databases): their records
 * in the platform database, and Platform's admin connections to them.
 */
export class ClusterRegistry {
  readonly #orm: MikroORM;
  readonly #box: SecretBox;
  readonly #log: Logger;
  readonly #pools = new Map<string, { pool: pg.Pool; access: ClusterAccess }>();
  /** Admin connections to other databases than `postgres` kept for a while, by cluster, then database. */
  readonly #kept = new Map<string, Map<string, pg.Pool>>();
  /**
   * Opened settings by cluster name, kept for a minute (ResolveTenant needs
   * them on every call; another Platform instance may re-register a cluster).
   */
  readonly #access = new Map<string, { at: number; access: Promise<ClusterAccess> }>();

  constructor(options: { orm: MikroORM; box: SecretBox; log: Logger }) {
    this.#orm = options.orm;
    this.#box = options.box;
    this.#log = options.log;
  }

  /**
   * Registers a cluster, or gives a registered one new settings, after
   * checking that its admin role can reach it and create databases and roles.
   */
  async register(settings: ClusterSettings): Promise<Cluster> {
    checkSettings(settings);
    await checkAdminAccess(settings);
    const em = this.#orm.em.fork();
    await upsertCluster(em, { ...settings, adminPassword: this.#box.seal(settings.adminPassword, adminPasswordContext(settings.name)) });
    await this.#forget(settings.name);
    return (await findCluster(em, settings.name))!;
  }

  /**
   * Registers the server named by a superuser URL as cluster `name` when it
   * is not registered yet; when it is, refreshes its address and credential
   * (they may have changed) and keeps the rest.
   */
  async registerServer(name: string, server: { host: string; port: number; user: string; password: string }, defaults: { capacity: number; poolCapacity: number; region: string }): Promise<void> {
    const existing = await findCluster(this.#orm.em.fork(), name);
    await this.register({
      name,
      host: server.host,
      port: server.port,
      adminUser: server.user,
      adminPassword: server.password,
      capacity: existing?.capacity ?? defaults.capacity,
      poolCapacity: existing?.poolCapacity ?? defaults.poolCapacity,
      region: existing?.region ?? defaults.region,
      state: (existing?.state as ClusterStateName | undefined) ?? clusterStates.accepting,
    });
  }

  /** A cluster's settings with the admin password opened; NOT_FOUND for an unknown name. */
  access(name: string): Promise<ClusterAccess> {
    const cached = this.#access.get(name);
    if (cached !== undefined && Date.now() - cached.at < 60_000) {
      return cached.access;
    }
    const access = this.#load(name);
    this.#access.set(name, { at: Date.now(), access });
    access.catch(() => this.#access.delete(name));
    return access;
  }

  async #load(name: string): Promise<ClusterAccess> {
    const cluster = await findCluster(this.#orm.em.fork(), name);
    if (cluster === null) {
      throw new ConnectError(`cluster "${name}" is not registered`, Code.NotFound);
    }
    const { host, port, adminUser, adminPassword, capacity, poolCapacity, region, state } = cluster;
    return { name, host, port, adminUser, adminPassword: this.#box.open(adminPassword, adminPasswordContext(name)), capacity, poolCapacity, region, state: state as ClusterStateName };
  }

  /**
   * What tells one PostgreSQL server from another: its system identifier,
   * or its host and port while it cannot be reached. Two clusters
   * registered on one server under different names have the same.
   */
  async serverIdentity(name: string): Promise<string> {
    const access = await this.access(name);
    return this.admin(name, async (admin) => (await admin.query<{ id: string }>("select system_identifier::text as id from pg_control_system()")).rows[0]!.id).catch(
      () => `${access.host}:${access.port}`,
    );
  }

  /** Runs `fn` on an admin connection to the cluster's `postgres` database. */
  async admin<T>(name: string, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    let entry = this.#pools.get(name);
    if (entry === undefined) {
      const access = await this.access(name);
      entry = this.#pools.get(name);
      if (entry === undefined) {
        const pool = new pg.Pool({ ...connectionOf(access), database: "postgres", max: 4, idleTimeoutMillis: 10_000 });
        pool.on("error", (error) => this.#log.warn({ err: error, cluster: name }, "cluster admin connection failed"));
        discardLostConnections(pool);
        entry = { pool, access };
        this.#pools.set(name, entry);
      }
    }
    const client = await entry.pool.connect();
    try {
      return await fn(client);
    } finally {
      client.release();
    }
  }

  /** The settings {@link connect} opens a connection with: plain values, which another thread can be handed. */
  async clientConfig(name: string, database: string, login?: { user: string; password: string }): Promise<pg.ClientConfig> {
    return { ...connectionOf(await this.access(name)), database, ...login };
  }

  /**
   * Opens a connection to one database of the cluster, as the admin or as
   * `login` (a tenant's own role); the caller ends it.
   */
  async connect(name: string, database: string, login?: { user: string; password: string }): Promise<pg.Client> {
    const client = new pg.Client(await this.clientConfig(name, database, login));
    // Its failure surfaces through the query in flight; unheard, the event would end the process.
    client.on("error", () => {});
    await client.connect();
    return client;
  }

  /**
   * Opens a logical replication connection (a WAL sender) to one database
   * of the cluster, as the admin: it takes replication commands such as
   * CREATE_REPLICATION_SLOT. The caller ends it.
   */
  async replicationConnection(name: string, database: string): Promise<pg.Client> {
    const access = await this.access(name);
    // node-postgres passes `replication` on in the startup message; its types do not list it.
    const client = new pg.Client({ ...connectionOf(access), database, replication: "database" } as pg.ClientConfig);
    client.on("error", () => {});
    await client.connect();
    return client;
  }

  /** Runs `fn` on an admin connection to one database of the cluster, closed afterwards. */
  async inDatabase<T>(name: string, database: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
    const client = await this.connect(name, database);
    try {
      return await fn(client);
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  /**
   * Runs `fn` on an admin connection to one database of the cluster, kept
   * open for the next call a few seconds (a pool database, which
   * provisioning reaches for every pooled tenant, so as not to open one
   * each time). `fn` must leave the connection as it found it: no
   * transaction open, no session setting changed; one that fails is
   * closed.
   */
  async inDatabaseKept<T>(name: string, database: string, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    let byDatabase = this.#kept.get(name);
    if (byDatabase === undefined) {
      byDatabase = new Map();
      this.#kept.set(name, byDatabase);
    }
    let pool = byDatabase.get(database);
    if (pool === undefined) {
      const access = await this.access(name);
      pool = byDatabase.get(database);
      if (pool === undefined) {
        pool = new pg.Pool({ ...connectionOf(access), database, max: 2, idleTimeoutMillis: 5000 });
        pool.on("error", (error) => this.#log.warn({ err: error, cluster: name, database }, "cluster admin connection failed"));
        discardLostConnections(pool);
        byDatabase.set(database, pool);
      }
    }
    const client = await pool.connect();
    try {
      const result = await fn(client);
      client.release();
      return result;
    } catch (error) {
      client.release(true);
      throw error;
    }
  }

  /** Drops a database of the cluster, if it exists, ending its sessions. */
  async dropDatabase(name: string, database: string): Promise<void> {
    await this.admin(name, (admin) => admin.query(`drop database if exists ${pg.escapeIdentifier(database)} with (force)`));
  }

  /** Drops a role of the cluster, if it exists. */
  async dropRole(name: string, role: string): Promise<void> {
    await this.admin(name, (admin) => admin.query(`drop role if exists ${pg.escapeIdentifier(role)}`));
  }

  /** Closes the admin connections. */
  async close(): Promise<void> {
    await Promise.all([...new Set([...this.#pools.keys(), ...this.#kept.keys()])].map((name) => this.#forget(name)));
  }

  async #forget(name: string): Promise<void> {
    this.#access.delete(name);
    const entry = this.#pools.get(name);
    this.#pools.delete(name);
    await entry?.pool.end().catch(() => undefined);
    const kept = this.#kept.get(name);
    this.#kept.delete(name);
    await Promise.all([...(kept?.values() ?? [])].map((pool) => pool.end().catch(() => undefined)));
  }
}

function connectionOf(access: ClusterAccess): pg.ClientConfig {
  return {
    host: access.host,
    port: access.port,
    user: access.adminUser,
    password: access.adminPassword,
    application_name: "tenantry-platform",
    connectionTimeoutMillis: 5000,
  };
}

function checkSettings(settings: ClusterSettings): void {
  if (!clusterName.test(settings.name)) {
    throw new ConnectError(`malformed cluster name "${settings.name}": use 1 to 40 lower-case letters, digits and hyphens, starting with a letter`, Code.InvalidArgument);
  }
  if (settings.host === "" || /\s/.test(settings.host)) {
    throw new ConnectError("host is required", Code.InvalidArgument);
  }
  if (!Number.isInteger(settings.port) || settings.port < 1 || settings.port > 65535) {
    throw new ConnectError(`port ${settings.port} is out of range`, Code.InvalidArgument);
  }
  if (settings.adminUser === "") {
    throw new ConnectError("admin_user is required", Code.InvalidArgument);
  }
  if (!Number.isInteger(settings.capacity) || settings.capacity < 1) {
    throw new ConnectError("capacity must be a positive number of tenants", Code.InvalidArgument);
  }
  if (!Number.isInteger(settings.poolCapacity) || settings.poolCapacity < 1) {
    throw new ConnectError("pool_capacity must be a positive number of pooled tenants", Code.InvalidArgument);
  }
  if (!region.test(settings.region)) {
    throw new ConnectError(`malformed region "${settings.region}": use up to 40 lower-case letters, digits and hyphens`, Code.InvalidArgument);
  }
}

async function checkAdminAccess(settings: ClusterSettings): Promise<void> {
  const client = new pg.Client({
    host: settings.host,
    port: settings.port,
    user: settings.adminUser,
    password: settings.adminPassword,
    database: "postgres",
    connectionTimeoutMillis: 5000,
    application_name: "tenantry-platform",
  });
  // A lost connection fails the query in flight; the event alone would end the process.
  client.on("error", () => {});
  try {
    await client.connect();
  } catch (error) {
    throw new ConnectError(
      `cannot connect to ${settings.host}:${settings.port} as "${settings.adminUser}": ${(error as Error).message}`,
      Code.FailedPrecondition,
    );
  }
  try {
    const { rows } = await client.query<{ rolsuper: boolean; rolcreatedb: boolean; rolcreaterole: boolean }>(
      "select rolsuper, rolcreatedb, rolcreaterole from pg_roles where rolname = current_user",
    );
    const role = rows[0];
    if (role === undefined || !(role.rolsuper || (role.rolcreatedb && role.rolcreaterole))) {
      throw new ConnectError(`role "${settings.adminUser}" may not create databases and roles: grant it CREATEDB and CREATEROLE`, Code.FailedPrecondition);
    }
  } finally {
    await client.end().catch(() => undefined);
  }
}
