import { Code, ConnectError } from "@connectrpc/connect";
import pg from "pg";
import { watchConnectionLoss } from "./connection-loss.ts";
import { prepareParameterizedQueries } from "./prepared-statements.ts";

/** Where a tenant's database is and whom to connect as. */
export interface TenantEndpoint {
  tenantId: string;
  host: string;
  port: number;
  database: string;
  /** The login role: the tenant's own (dedicated), or the pool database's (pooled). */
  user: string;
  password: string;
  /**
   * The schema the service's unqualified names resolve to (`search_path`): set
   * at login on a dedicated database's connections, and on each lease of a
   * pooled tenant. Absent or empty: the login's own default path.
   */
  schema?: string;
  /**
   * A pooled tenant's role, which every lease takes on (`SET ROLE`) over the
   * pool database's login; its connections are shared by the tenants of that
   * database. Absent or empty: a dedicated database, whose login is the
   * tenant's own role.
   */
  sessionRole?: string;
  /**
   * The leases run migrations, which leave `search_path` reset: a pooled
   * connection takes the tenant on again at its next lease.
   */
  migration?: boolean;
}

/** Options of a {@link ConnectionBudget}. */
export interface ConnectionBudgetOptions {
  /** Most connections open at once across all tenants (the ceiling). */
  maxConnections: number;
  /** Most connections one tenant may hold at once, in its own database or in a pool database. */
  maxConnectionsPerTenant: number;
  /** Most connections the pooled tenants of one pool database hold at once together; `maxConnections` by default. */
  maxConnectionsPerPoolDatabase?: number;
  /**
   * Most pooled leases in use at once on one database server, over all its
   * pool databases; `maxConnections` by default. See {@link ConnectionBudget}.
   */
  maxPooledLeasesPerServer?: number;
  /** How long a call waits for a connection before it fails with UNAVAILABLE. */
  acquireTimeoutMs: number;
  /** An idle connection is closed after this long. */
  idleTimeoutMs: number;
  /** `application_name` of every connection, so they can be told apart in `pg_stat_activity`. */
  applicationName: string;
  /** Type parsers installed on every connection. */
  types?: pg.CustomTypesConfig;
  /** Run parameterized queries as prepared statements of their connection (see `prepareParameterizedQueries`). */
  prepareStatements?: boolean;
  /** Reports a connection that failed, with the detail that is not returned to callers. */
  onError?: (error: unknown, tenantId: string) => void;
}

/** A connection leased from the budget; `release()` returns it (`release(true)` closes it). */
export type LeasedClient = pg.Client & { release(destroy?: boolean | Error): void };

/** Counters of a {@link ConnectionBudget}, for metrics and tests. */
export interface ConnectionBudgetStats {
  /** Connections open or opening, including those being closed. */
  open: number;
  /** Connections leased to calls. */
  inUse: number;
  /** Calls waiting for a connection. */
  waiting: number;
  /** Tenants holding at least one connection: of their own database, or leased from a pool database. */
  tenants: number;
  /** Connections opened since start (cold tenant opens included). */
  opened: number;
  /** Connections opened for a tenant that had none open: the first call of a cold tenant pays a backend start. */
  coldOpens: number;
}

/** Counters of the connections one pool database's tenants share, for metrics: see {@link ConnectionBudget.poolDatabaseStats}. */
export interface PoolDatabaseStats {
  /** The pool database's name. */
  database: string;
  /** Its server, `host:port`: pool databases of two clusters may have one name. */
  server: string;
  /** Its connections open or opening. */
  open: number;
  /** Its connections leased to calls. */
  inUse: number;
  /** Calls of its tenants waiting for one of its connections. */
  waiting: number;
  /** Its tenants holding a lease. */
  tenants: number;
}

/**
 * The connections to one database as one login: a dedicated tenant's, or a
 * pool database's, which its pooled tenants share.
 */
class TenantPool {
  /** Idle connections, the longest idle first. */
  readonly idle: pg.Client[] = [];
  /** When each idle connection was last released (ms, `performance.now()`), in the order of `idle`. */
  readonly idleSince: number[] = [];
  inUse = 0;
  /** Connections of this tenant counted in the budget: opening, idle, leased or closing. */
  live = 0;
  retired = false;
  /** Called once every connection of the pool has closed (see `retire`). */
  readonly emptied = new Set<() => void>();
  /** Leased connections of a shared pool, with the tenant each serves. */
  readonly leased = new Map<pg.Client, string>();
  /** A shared pool's connections, each with its place (from 0, the lowest free when it opened): see `#takeIdle`. */
  readonly places = new Map<pg.Client, number>();
  /** The key of the pool in the budget: the tenant's id, or the pool database's address and login. */
  readonly key: string;
  /** Its database server, `host:port`. */
  readonly server: string;
  /** Shared by the pooled tenants of a pool database: each lease takes its tenant on. */
  readonly shared: boolean;
  /** What errors name: the tenant's database, or the pool database. */
  readonly label: string;
  readonly fingerprint: string;
  readonly config: pg.ClientConfig;
  constructor(key: string, shared: boolean, label: string, fingerprint: string, config: pg.ClientConfig) {
    this.key = key;
    this.shared = shared;
    this.label = label;
    this.fingerprint = fingerprint;
    this.config = config;
    this.server = `${config.host}:${config.port}`;
  }
}

interface Waiter {
  pool: TenantPool;
  endpoint: TenantEndpoint;
  resolve: (client: LeasedClient) => void;
  reject: (error: unknown) => void;
  timer: NodeJS.Timeout;
  /** Times a later waiter was served before it for a connection holding that one's tenant (see `#fairest`). */
  passedOver?: number;
}

/** How many times a waiting call may see a later one served first because a free connection holds that one's tenant. */
const maxPassedOver = 2;

/**
 * The database connections of one service process, across all tenants. It
 * keeps one small pool per tenant and a ceiling over all of them: a call
 * gets an idle connection of its tenant, or a new one while the process is
 * under its ceiling; otherwise it waits in line, idle connections of other
 * tenants are closed to make room, and every waiter is reconsidered, in
 * order, whenever capacity frees. A call that waits longer than
 * `acquireTimeoutMs` fails with UNAVAILABLE instead of hanging.
 *
 * Pooled tenants (an endpoint with a `sessionRole`) share the connections
 * of their pool database. A lease takes its tenant on in one round trip
 * (`SET ROLE`, `search_path`, `application_name`) unless the connection
 * holds that tenant already; a connection released inside a transaction is
 * closed, so neither an open nor an aborted transaction reaches the next
 * lease. A tenant refused its role (42501: it was shut out of the pool
 * database) fails with UNAVAILABLE. Each pooled tenant holds at most
 * `maxConnectionsPerTenant` of its pool database's connections, and a
 * freed connection goes to the waiting tenant that holds the fewest
 * (preferring, a few times at most, one it holds already).
 * Pooled leases in use on one database server, over all its pool
 * databases, are at most `maxPooledLeasesPerServer`: a call beyond it waits
 * here, with the connections open. Calls spread over many pool databases
 * would otherwise want a connection in each at once, more than the
 * ceiling allows, and close one another's idle connections to open their
 * own: a new server process, its caches empty, for one call.
 *
 * pg-pool cannot share a ceiling between pools or close one idle connection
 * of a pool on demand, which is why the connections are kept here.
 */
export class ConnectionBudget {
  readonly #options: ConnectionBudgetOptions;
  readonly #maxPerPoolDatabase: number;
  readonly #maxPooledPerServer: number;
  /** Pooled leases in use on each database server (see `maxPooledLeasesPerServer`). */
  readonly #pooledInUse = new Map<string, number>();
  /** Pools in least-recently-used order (oldest first), by key (see `TenantPool.key`). */
  readonly #pools = new Map<string, TenantPool>();
  /** Leases each pooled tenant holds (a dedicated tenant's are its pool's `inUse`). */
  readonly #tenantLeases = new Map<string, number>();
  readonly #waiters: Waiter[] = [];
  #open = 0;
  #closing = 0;
  #opened = 0;
  #coldOpens = 0;
  #closed = false;
  readonly #drained = new Set<() => void>();
  /** Closes the connections idle for longer than `idleTimeoutMs`; runs while any connection is idle. */
  #sweeper: NodeJS.Timeout | undefined;

  constructor(options: ConnectionBudgetOptions) {
    if (options.maxConnectionsPerTenant > options.maxConnections) {
      throw new Error("maxConnectionsPerTenant cannot exceed maxConnections");
    }
    if ((options.maxConnectionsPerPoolDatabase ?? 0) > options.maxConnections) {
      throw new Error("maxConnectionsPerPoolDatabase cannot exceed maxConnections");
    }
    this.#options = options;
    this.#maxPerPoolDatabase = options.maxConnectionsPerPoolDatabase ?? options.maxConnections;
    this.#maxPooledPerServer = options.maxPooledLeasesPerServer ?? options.maxConnections;
  }

  /**
   * Leases a connection to a tenant's database. Rejects with UNAVAILABLE when
   * none frees up within `acquireTimeoutMs` or the database cannot be reached.
   */
  acquire(endpoint: TenantEndpoint): Promise<LeasedClient> {
    if (this.#closed) {
      return Promise.reject(new ConnectError("the service is shutting down; retry on another instance", Code.Unavailable));
    }
    let pool: TenantPool;
    try {
      pool = this.#poolFor(endpoint);
    } catch (error) {
      return Promise.reject(error);
    }
    if (this.#waiters.length === 0) {
      const granted = this.#tryGrant(pool, endpoint);
      if (granted !== undefined) {
        return granted;
      }
    }
    return new Promise<LeasedClient>((resolve, reject) => {
      const waiter: Waiter = {
        pool,
        endpoint,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.#removeWaiter(waiter);
          reject(
            new ConnectError(
              `no database connection for tenant "${endpoint.tenantId}" within ${this.#options.acquireTimeoutMs} ms: the service is at its connection limit; retry later`,
              Code.Unavailable,
            ),
          );
        }, this.#options.acquireTimeoutMs),
      };
      this.#waiters.push(waiter);
      this.#pump();
    });
  }

  /** Current counters. */
  stats(): ConnectionBudgetStats {
    let inUse = 0;
    for (const pool of this.#pools.values()) {
      inUse += pool.inUse;
    }
    let tenants = this.#tenantLeases.size;
    for (const pool of this.#pools.values()) {
      tenants += pool.shared ? 0 : 1;
    }
    return { open: this.#open, inUse, waiting: this.#waiters.length, tenants, opened: this.#opened, coldOpens: this.#coldOpens };
  }

  /** Current counters of each pool database the budget holds connections to (or has calls waiting for), apart from dedicated tenants' connections. */
  poolDatabaseStats(): PoolDatabaseStats[] {
    return [...this.#pools.values()]
      .filter((pool) => pool.shared)
      .map((pool) => ({
        database: pool.config.database ?? "",
        server: `${pool.config.host}:${pool.config.port}`,
        open: pool.live,
        inUse: pool.inUse,
        waiting: this.#waiters.filter((waiter) => waiter.pool === pool).length,
        tenants: new Set(pool.leased.values()).size,
      }));
  }

  /**
   * Closes a tenant's connections: idle ones at once, leased ones as they
   * come back; resolves when none is open. Later calls open new ones. Of a
   * pool database, those that hold the tenant are closed.
   */
  async retire(tenantId: string): Promise<void> {
    const ended: Promise<void>[] = [];
    for (const pool of this.#pools.values()) {
      if (!pool.shared) {
        continue;
      }
      for (const client of pool.idle.filter((c) => sessions.get(c)?.tenantId === tenantId)) {
        ended.push(endOf(client));
        this.#closeIdle(pool, client);
      }
      for (const [client, leasedTo] of pool.leased) {
        if (leasedTo === tenantId) {
          closeOnRelease.add(client);
          ended.push(endOf(client));
        }
      }
    }
    await this.#retireDedicated(tenantId);
    await Promise.all(ended);
  }

  async #retireDedicated(tenantId: string): Promise<void> {
    const pool = this.#pools.get(tenantId);
    if (pool === undefined || pool.shared) {
      return;
    }
    pool.retired = true;
    this.#pools.delete(tenantId);
    while (pool.idle.length > 0) {
      this.#closeIdle(pool, pool.idle[0]!);
    }
    if (pool.live > 0) {
      await new Promise<void>((resolve) => pool.emptied.add(resolve));
    }
  }

  /**
   * Stops leasing, fails the waiters with UNAVAILABLE, closes idle
   * connections, and resolves once every leased connection has come back and
   * been closed, or after `timeoutMs`.
   */
  async close(timeoutMs = 5000): Promise<void> {
    this.#closed = true;
    clearInterval(this.#sweeper);
    this.#sweeper = undefined;
    for (const waiter of this.#waiters.splice(0)) {
      clearTimeout(waiter.timer);
      waiter.reject(new ConnectError("the service is shutting down; retry on another instance", Code.Unavailable));
    }
    for (const pool of this.#pools.values()) {
      pool.retired = true;
      while (pool.idle.length > 0) {
        this.#closeIdle(pool, pool.idle[0]!);
      }
    }
    if (this.#open === 0) {
      return;
    }
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, timeoutMs);
      const self = this;
      function done() {
        clearTimeout(timer);
        self.#drained.delete(done);
        resolve();
      }
      this.#drained.add(done);
    });
  }

  #poolFor(endpoint: TenantEndpoint): TenantPool {
    const { key, shared, fingerprint } = this.#placementOf(endpoint);
    let pool = this.#pools.get(key);
    if (pool !== undefined && pool.fingerprint !== fingerprint) {
      // The tenant moved or its credentials changed: the old connections go as they come back.
      pool.retired = true;
      while (pool.idle.length > 0) {
        this.#closeIdle(pool, pool.idle[0]!);
      }
      pool = undefined;
    }
    if (pool === undefined) {
      const schema = endpoint.schema ?? "";
      pool = new TenantPool(key, shared, shared ? `pool database "${endpoint.database}"` : `database of tenant "${endpoint.tenantId}"`, fingerprint, {
        host: endpoint.host,
        port: endpoint.port,
        database: endpoint.database,
        user: endpoint.user,
        password: endpoint.password,
        application_name: this.#options.applicationName,
        connectionTimeoutMillis: this.#options.acquireTimeoutMs,
        // A dedicated database's connections serve one tenant: its schema is their path from the start, at no cost.
        ...(shared || schema === "" ? {} : { options: `-c search_path=${pg.escapeIdentifier(schema)}` }),
        ...(this.#options.types === undefined ? {} : { types: this.#options.types }),
      });
    } else {
      this.#pools.delete(key);
    }
    // Re-inserted so that the map stays in least-recently-used order.
    this.#pools.set(key, pool);
    return pool;
  }

  /** Which pool serves an endpoint, computed once per endpoint object rather than per lease. */
  #placementOf(endpoint: TenantEndpoint): Placement {
    let placement = placements.get(endpoint);
    if (placement === undefined) {
      const schema = endpoint.schema ?? "";
      const role = endpoint.sessionRole ?? "";
      if (/[\s\\\0]/.test(schema) || (role !== "" && schema === "")) {
        throw new ConnectError(`tenant "${endpoint.tenantId}" has an unusable schema ${JSON.stringify(schema)} in its route`, Code.Internal);
      }
      const address = `${endpoint.host}\0${endpoint.port}\0${endpoint.database}\0${endpoint.user}`;
      if (role === "") {
        placement = { key: endpoint.tenantId, shared: false, fingerprint: `${address}\0${endpoint.password}\0${schema}` };
      } else {
        // The pool database's strings are those of its pool when it has one: the tenants of a pool database do not each keep a copy.
        const key = `pool\0${address}`;
        const fingerprint = `${address}\0${endpoint.password}`;
        const pool = this.#pools.get(key);
        placement = {
          key: pool?.key ?? key,
          shared: true,
          fingerprint: pool?.fingerprint === fingerprint ? pool.fingerprint : fingerprint,
          session: { tenantId: endpoint.tenantId, key: `${endpoint.tenantId}\0${role}\0${schema}` },
          home: homePlace(endpoint.tenantId),
        };
      }
      placements.set(endpoint, placement);
    }
    return placement;
  }

  /**
   * The statements that take a pooled connection to an endpoint's session:
   * made when a lease needs them (it waits for a round trip to the database
   * then), rather than kept for each tenant.
   */
  #enterSql(endpoint: TenantEndpoint): string {
    return [
      `set role ${pg.escapeIdentifier(endpoint.sessionRole!)}`,
      `set search_path to ${pg.escapeIdentifier(endpoint.schema!)}`,
      `set application_name to ${pg.escapeLiteral(sessionApplicationName(this.#options.applicationName, endpoint.tenantId))}`,
    ].join("; ");
  }

  /** Whether a lease of `tenantId` from `pool` stays within the limits of the tenant and of a pool database. */
  #hasRoom(pool: TenantPool, tenantId: string): boolean {
    if (!pool.shared) {
      return pool.inUse < this.#options.maxConnectionsPerTenant;
    }
    return (
      pool.inUse < this.#maxPerPoolDatabase &&
      (this.#tenantLeases.get(tenantId) ?? 0) < this.#options.maxConnectionsPerTenant &&
      (this.#pooledInUse.get(pool.server) ?? 0) < this.#maxPooledPerServer
    );
  }

  #countLease(pool: TenantPool, tenantId: string, delta: 1 | -1): void {
    pool.inUse += delta;
    if (pool.shared) {
      const leases = (this.#tenantLeases.get(tenantId) ?? 0) + delta;
      if (leases === 0) {
        this.#tenantLeases.delete(tenantId);
      } else {
        this.#tenantLeases.set(tenantId, leases);
      }
      const onServer = (this.#pooledInUse.get(pool.server) ?? 0) + delta;
      if (onServer === 0) {
        this.#pooledInUse.delete(pool.server);
      } else {
        this.#pooledInUse.set(pool.server, onServer);
      }
    }
  }

  #tryGrant(pool: TenantPool, endpoint: TenantEndpoint): Promise<LeasedClient> | undefined {
    if (!this.#hasRoom(pool, endpoint.tenantId)) {
      return undefined;
    }
    const idle = this.#takeIdle(pool, endpoint);
    if (idle !== undefined) {
      this.#countLease(pool, endpoint.tenantId, 1);
      return pool.shared ? this.#enter(pool, idle, endpoint) : Promise.resolve(this.#lease(pool, idle, endpoint));
    }
    if (this.#open >= this.#options.maxConnections) {
      return undefined;
    }
    if (pool.live === 0) {
      this.#coldOpens++;
    }
    this.#countLease(pool, endpoint.tenantId, 1);
    pool.live++;
    this.#open++;
    this.#opened++;
    return this.#connect(pool, endpoint);
  }

  /**
   * An idle connection for `endpoint`. Of a dedicated database, the one idle
   * for the shortest time, since those idle longest are the ones to close
   * when calls slow down. Of a pool database, one that holds the tenant
   * already if there is one; otherwise the tenant's own neighbourhood of
   * the pool's connections: each connection has a place (0, 1, … up to
   * `maxConnectionsPerPoolDatabase`) and each tenant a home place (a hash of
   * its id), and the lease takes the idle connection whose place comes
   * first from the tenant's home on, round the ring. A tenant is thus
   * served by the same one or few connections, whose server processes keep
   * its tables and statements cached, and each connection by a small share
   * of the pool's tenants, instead of every connection taking on every
   * tenant in turn. Only the choice among idle connections changes: who is
   * served, when, and how many connections are open stay as they were. A
   * connection idle for more than half the idle timeout is passed over
   * while a fresher one is idle, so that connections left over after a
   * burst still close.
   */
  #takeIdle(pool: TenantPool, endpoint: TenantEndpoint): pg.Client | undefined {
    let at = pool.idle.length - 1;
    if (pool.shared && at > 0) {
      const { session, home } = this.#placementOf(endpoint);
      const holding = pool.idle.findLastIndex((client) => sessions.get(client)?.key === session!.key);
      if (holding !== -1) {
        at = holding;
      } else {
        const ring = this.#maxPerPoolDatabase;
        const fresh = performance.now() - this.#options.idleTimeoutMs / 2;
        let nearest = ring;
        for (let i = pool.idle.length - 1; i >= 0 && pool.idleSince[i]! > fresh; i--) {
          const distance = (((pool.places.get(pool.idle[i]!) ?? 0) - home!) % ring + ring) % ring;
          if (distance < nearest) {
            nearest = distance;
            at = i;
          }
        }
      }
    }
    if (at < 0) {
      return undefined;
    }
    const [client] = pool.idle.splice(at, 1);
    pool.idleSince.splice(at, 1);
    return client;
  }

  /**
   * Has a pooled connection take on the lease's tenant (role, path and
   * application name, in one round trip) unless it holds that tenant
   * already. A connection that fails to is closed, never reused.
   */
  async #enter(pool: TenantPool, client: pg.Client, endpoint: TenantEndpoint): Promise<LeasedClient> {
    const { session } = this.#placementOf(endpoint);
    if (sessions.get(client)?.key !== session!.key) {
      sessions.delete(client);
      // Counted as the tenant's from now on, so that retiring the tenant meanwhile closes it too.
      pool.leased.set(client, endpoint.tenantId);
      try {
        await client.query(this.#enterSql(endpoint));
      } catch (error) {
        pool.leased.delete(client);
        this.#countLease(pool, endpoint.tenantId, -1);
        this.#closeClient(pool, client);
        this.#pump();
        if ((error as { code?: unknown }).code === insufficientPrivilege) {
          throw new ConnectError(
            `tenant "${endpoint.tenantId}" may not use its ${pool.label} at the moment (it is being moved or removed); retry later`,
            Code.Unavailable,
          );
        }
        this.#options.onError?.(error, endpoint.tenantId);
        throw new ConnectError(`the ${pool.label} of tenant "${endpoint.tenantId}" did not take the tenant on; retry later`, Code.Unavailable);
      }
      sessions.set(client, session!);
    }
    return this.#lease(pool, client, endpoint);
  }

  async #connect(pool: TenantPool, endpoint: TenantEndpoint): Promise<LeasedClient> {
    const client = new pg.Client(pool.config);
    if (pool.shared) {
      const taken = new Set(pool.places.values());
      let place = 0;
      while (taken.has(place)) {
        place++;
      }
      pool.places.set(client, place);
    }
    if (this.#options.prepareStatements) {
      prepareParameterizedQueries(client);
    }
    watchConnectionLoss(client, (error) => {
      if (!broken.has(client)) {
        broken.add(client);
        this.#options.onError?.(error, pool.leased.get(client) ?? endpoint.tenantId);
      }
      this.#closeIdle(pool, client);
    });
    ends.set(client, new Promise<void>((resolve) => client.once("end", () => resolve())));
    // A transaction whose connection broke never returns it (Kysely releases
    // only after a commit or rollback that succeeded): once the connection
    // has ended, its lease is over.
    client.on("end", () => leases.get(client)?.(true));
    try {
      await client.connect();
    } catch (error) {
      pool.places.delete(client);
      this.#countLease(pool, endpoint.tenantId, -1);
      pool.live--;
      this.#open--;
      if (pool.live === 0) {
        pool.emptied.forEach((done) => done());
      }
      this.#forgetIfEmpty(pool);
      this.#options.onError?.(error, endpoint.tenantId);
      this.#pump();
      throw new ConnectError(
        pool.shared ? `the ${pool.label} of tenant "${endpoint.tenantId}" cannot be reached; retry later` : `the database of tenant "${endpoint.tenantId}" cannot be reached; retry later`,
        Code.Unavailable,
      );
    }
    return pool.shared ? this.#enter(pool, client, endpoint) : this.#lease(pool, client, endpoint);
  }

  #lease(pool: TenantPool, client: pg.Client, endpoint: TenantEndpoint): LeasedClient {
    const leased = client as LeasedClient;
    let released = false;
    if (pool.shared) {
      pool.leased.set(client, endpoint.tenantId);
    }
    leased.release = (destroy?: boolean | Error) => {
      if (released) {
        return;
      }
      released = true;
      leases.delete(client);
      pool.leased.delete(client);
      this.#countLease(pool, endpoint.tenantId, -1);
      if (pool.shared && endpoint.migration) {
        // Migrations reset search_path to the login's default: the next lease sets it again.
        sessions.delete(client);
      }
      // 'T' in a transaction, 'E' in an aborted one: neither may reach another call.
      const status = client.getTransactionStatus();
      const inTransaction = status !== null && status !== "I";
      if (destroy || inTransaction || broken.has(client) || closeOnRelease.has(client) || pool.retired || this.#closed) {
        this.#closeClient(pool, client);
      } else {
        pool.idle.push(client);
        pool.idleSince.push(performance.now());
        this.#sweepLater();
      }
      this.#pump();
    };
    leases.set(client, leased.release);
    return leased;
  }

  #closeClient(pool: TenantPool, client: pg.Client): void {
    this.#closing++;
    client
      .end()
      .catch(() => undefined)
      .finally(() => {
        this.#closing--;
        this.#open--;
        pool.live--;
        pool.places.delete(client);
        if (pool.live === 0) {
          pool.emptied.forEach((done) => done());
        }
        this.#forgetIfEmpty(pool);
        this.#pump();
        if (this.#open === 0) {
          for (const done of this.#drained) {
            done();
          }
        }
      });
  }

  #forgetIfEmpty(pool: TenantPool): void {
    if (pool.live === 0 && pool.inUse === 0 && this.#pools.get(pool.key) === pool && !this.#waiters.some((w) => w.pool === pool)) {
      this.#pools.delete(pool.key);
    }
  }

  #removeWaiter(waiter: Waiter): void {
    const at = this.#waiters.indexOf(waiter);
    if (at !== -1) {
      this.#waiters.splice(at, 1);
    }
    this.#forgetIfEmpty(waiter.pool);
  }

  /**
   * Serves waiters in order, as far as capacity allows. A waiter that could
   * take an idle connection of its own tenant does not jump ahead of an
   * earlier one held back by the ceiling: that idle connection is closed to
   * make room for the earlier one instead. Then, for waiters still held back,
   * idle connections of tenants nobody waits for are closed. Among the
   * waiters of a pool database, the next served is the one whose tenant
   * holds the fewest of its connections (the earliest of those).
   */
  #pump(): void {
    let blocked = 0;
    const considered = new Set<Waiter>();
    for (let i = 0; i < this.#waiters.length; ) {
      const first = this.#waiters[i]!;
      if (considered.has(first)) {
        i++;
        continue;
      }
      const waiter = first.pool.shared ? this.#fairest(first, i, considered) : first;
      considered.add(waiter);
      const pool = waiter.pool;
      if (!this.#hasRoom(pool, waiter.endpoint.tenantId)) {
        continue;
      }
      if (blocked > this.#closing && pool.idle.length > 0) {
        this.#closeIdle(pool, pool.idle[0]!);
        continue;
      }
      const granted = this.#tryGrant(pool, waiter.endpoint);
      if (granted === undefined) {
        blocked++;
        continue;
      }
      this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
      clearTimeout(waiter.timer);
      granted.then(waiter.resolve, waiter.reject);
    }
    if (blocked > this.#closing) {
      this.#reclaim(blocked - this.#closing);
    }
  }

  /**
   * Of the waiters of `first`'s pool database from position `from` on, not
   * considered yet, the one whose tenant holds the fewest leases and may
   * take another (the earliest of those); `first` when none may. Except
   * that a later one of those whose tenant an idle connection holds
   * already (the one just freed, usually) goes first, as long as the
   * earliest has not been passed over so `maxPassedOver` times: a busy pool
   * database's server processes then each keep serving a few tenants, their
   * tables and plans cached, rather than each taking on every tenant in
   * turn, and no call waits more than a few leases longer for it.
   */
  #fairest(first: Waiter, from: number, considered: Set<Waiter>): Waiter {
    let earliest: Waiter | undefined;
    let held: Waiter | undefined;
    let fewest = Infinity;
    const holding = new Set<string>();
    for (const client of first.pool.idle) {
      const session = sessions.get(client);
      if (session !== undefined) {
        holding.add(session.key);
      }
    }
    for (let j = from; j < this.#waiters.length; j++) {
      const waiter = this.#waiters[j]!;
      if (waiter.pool !== first.pool || considered.has(waiter)) {
        continue;
      }
      const leases = this.#tenantLeases.get(waiter.endpoint.tenantId) ?? 0;
      if (leases > fewest || leases >= this.#options.maxConnectionsPerTenant) {
        continue;
      }
      const isHeld = holding.size > 0 && holding.has(this.#placementOf(waiter.endpoint).session!.key);
      if (leases < fewest) {
        earliest = waiter;
        held = isHeld ? waiter : undefined;
        fewest = leases;
      } else if (isHeld && held === undefined) {
        held = waiter;
      }
    }
    if (earliest === undefined) {
      return first;
    }
    if (held !== undefined && held !== earliest && (earliest.passedOver ?? 0) < maxPassedOver) {
      earliest.passedOver = (earliest.passedOver ?? 0) + 1;
      return held;
    }
    return earliest;
  }

  /** Closes up to `needed` idle connections of tenants nobody waits for, least recently used first. */
  #reclaim(needed: number): void {
    const wanted = new Set(this.#waiters.map((w) => w.pool));
    for (const pool of this.#pools.values()) {
      if (wanted.has(pool)) {
        continue;
      }
      while (needed > 0 && pool.idle.length > 0) {
        this.#closeIdle(pool, pool.idle[0]!);
        needed--;
      }
      if (needed === 0) {
        return;
      }
    }
  }

  #closeIdle(pool: TenantPool, client: pg.Client): void {
    const at = pool.idle.indexOf(client);
    if (at === -1) {
      return;
    }
    pool.idle.splice(at, 1);
    pool.idleSince.splice(at, 1);
    this.#closeClient(pool, client);
  }

  /**
   * Has idle connections swept: one timer for all of them rather than one
   * per release, so a connection closes between `idleTimeoutMs` and a
   * quarter more after its last use.
   */
  #sweepLater(): void {
    if (this.#sweeper !== undefined) {
      return;
    }
    const every = Math.max(10, this.#options.idleTimeoutMs / 4);
    this.#sweeper = setInterval(() => {
      const expired = performance.now() - this.#options.idleTimeoutMs;
      let idle = 0;
      for (const pool of [...this.#pools.values()]) {
        while (pool.idle.length > 0 && pool.idleSince[0]! <= expired) {
          this.#closeIdle(pool, pool.idle[0]!);
        }
        idle += pool.idle.length;
      }
      if (idle === 0) {
        clearInterval(this.#sweeper);
        this.#sweeper = undefined;
      }
    }, every);
    this.#sweeper.unref();
  }
}

/** The tenant a pooled connection holds: who it was set to, and the key of that setting. */
interface Session {
  tenantId: string;
  /** Tenant, role and schema. */
  key: string;
}

/** Which pool serves an endpoint, and how a pooled lease takes the tenant on. */
interface Placement {
  /** The pool's key in the budget. */
  key: string;
  shared: boolean;
  /** What the pool's connections were opened with: another one retires the pool. */
  fingerprint: string;
  /** Pooled: the session a lease needs (see `#enterSql` for the statements that take a connection to it). */
  session?: Session;
  /** Pooled: where the tenant's leases start looking among the pool database's connections (see `#takeIdle`). */
  home?: number;
}

/** SQLSTATE of "permission denied to set role" (among others): the tenant's role is no longer granted to the pool's login. */
const insufficientPrivilege = "42501";

/** Each endpoint's placement, computed once per endpoint object rather than per lease. */
const placements = new WeakMap<TenantEndpoint, Placement>();

/** The tenant each pooled connection holds; none while it is being set or after a migration reset it. */
const sessions = new WeakMap<pg.Client, Session>();

/** Leased connections of a retired pooled tenant: closed when they come back. */
const closeOnRelease = new WeakSet<pg.Client>();

/** Settles when a connection has ended. */
const ends = new WeakMap<pg.Client, Promise<void>>();

/**
 * A pooled connection's application name while it serves a tenant:
 * `<applicationName>@<tenant id>`, so that the tenant's sessions in a pool
 * database can be found in `pg_stat_activity`. PostgreSQL keeps 63 bytes:
 * a long one loses the end of the service's part, never the tenant's.
 */
function sessionApplicationName(applicationName: string, tenantId: string): string {
  return `${applicationName.slice(0, Math.max(0, 62 - tenantId.length))}@${tenantId}`;
}

/** A pooled tenant's home place among its pool database's connections: a hash of its id (FNV-1a, 32 bits). */
function homePlace(tenantId: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < tenantId.length; i++) {
    hash = Math.imul(hash ^ tenantId.charCodeAt(i), 0x01000193);
  }
  return hash >>> 0;
}

function endOf(client: pg.Client): Promise<void> {
  return ends.get(client) ?? Promise.resolve();
}

/** Connections that were lost (see `watchConnectionLoss`); they are closed instead of reused. */
const broken = new WeakSet<pg.Client>();

/** The release of each leased connection, by connection. */
const leases = new WeakMap<pg.Client, (destroy: boolean) => void>();
