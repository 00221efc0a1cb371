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
  user: string;
  password: string;
}

/** Options of a {@link ConnectionBudget}. */
export interface ConnectionBudgetOptions {
  /** Most connections open at once across all tenants (the ceiling). */
  maxConnections: number;
  /** Most connections one tenant may hold at once. */
  maxConnectionsPerTenant: number;
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
  /** Tenants holding at least one connection. */
  tenants: number;
  /** Connections opened since start (cold tenant opens included). */
  opened: number;
  /** Connections opened for a tenant that had none open: the first call of a cold tenant pays a backend start. */
  coldOpens: number;
}

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
  readonly tenantId: string;
  readonly fingerprint: string;
  readonly config: pg.ClientConfig;
  constructor(tenantId: string, fingerprint: string, config: pg.ClientConfig) {
    this.tenantId = tenantId;
    this.fingerprint = fingerprint;
    this.config = config;
  }
}

interface Waiter {
  pool: TenantPool;
  resolve: (client: LeasedClient) => void;
  reject: (error: unknown) => void;
  timer: NodeJS.Timeout;
}

/**
 * The database connections of one service process, across all tenants. It
 * keeps one small pool per tenant and a ceiling over all of them: a call
 * gets an idle connection of its tenant, or a new one while the process is
 * under its ceiling; otherwise it waits in line, idle connections of other
 * tenants are closed to make room, and every waiter is reconsidered, in
 * order, whenever capacity frees. A call that waits longer than
 * `acquireTimeoutMs` fails with UNAVAILABLE instead of hanging.
 *
 * pg-pool cannot share a ceiling between pools or close one idle connection
 * of a pool on demand, which is why the connections are kept here.
 */
export class ConnectionBudget {
  readonly #options: ConnectionBudgetOptions;
  /** Tenant pools in least-recently-used order (oldest first). */
  readonly #pools = new Map<string, TenantPool>();
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
    this.#options = options;
  }

  /**
   * Leases a connection to a tenant's database. Rejects with UNAVAILABLE when
   * none frees up within `acquireTimeoutMs` or the database cannot be reached.
   */
  acquire(endpoint: TenantEndpoint): Promise<LeasedClient> {
    if (this.#closed) {
      return Promise.reject(new ConnectError("the service is shutting down; retry on another instance", Code.Unavailable));
    }
    const pool = this.#poolFor(endpoint);
    if (this.#waiters.length === 0) {
      const granted = this.#tryGrant(pool);
      if (granted !== undefined) {
        return granted;
      }
    }
    return new Promise<LeasedClient>((resolve, reject) => {
      const waiter: Waiter = {
        pool,
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
    return { open: this.#open, inUse, waiting: this.#waiters.length, tenants: this.#pools.size, opened: this.#opened, coldOpens: this.#coldOpens };
  }

  /**
   * Closes a tenant's connections: idle ones at once, leased ones as they
   * come back; resolves when none is open. Later calls open new ones.
   */
  async retire(tenantId: string): Promise<void> {
    const pool = this.#pools.get(tenantId);
    if (pool === undefined) {
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
    let fingerprint = fingerprints.get(endpoint);
    if (fingerprint === undefined) {
      fingerprint = `${endpoint.host}\0${endpoint.port}\0${endpoint.database}\0${endpoint.user}\0${endpoint.password}`;
      fingerprints.set(endpoint, fingerprint);
    }
    let pool = this.#pools.get(endpoint.tenantId);
    if (pool !== undefined && pool.fingerprint !== fingerprint) {
      // The tenant moved or its credentials changed: the old connections go as they come back.
      pool.retired = true;
      while (pool.idle.length > 0) {
        this.#closeIdle(pool, pool.idle[0]!);
      }
      pool = undefined;
    }
    if (pool === undefined) {
      pool = new TenantPool(endpoint.tenantId, fingerprint, {
        host: endpoint.host,
        port: endpoint.port,
        database: endpoint.database,
        user: endpoint.user,
        password: endpoint.password,
        application_name: this.#options.applicationName,
        connectionTimeoutMillis: this.#options.acquireTimeoutMs,
        ...(this.#options.types === undefined ? {} : { types: this.#options.types }),
      });
    } else {
      this.#pools.delete(endpoint.tenantId);
    }
    // Re-inserted so that the map stays in least-recently-used order.
    this.#pools.set(endpoint.tenantId, pool);
    return pool;
  }

  #tryGrant(pool: TenantPool): Promise<LeasedClient> | undefined {
    if (pool.inUse >= this.#options.maxConnectionsPerTenant) {
      return undefined;
    }
    // The connection idle for the shortest time: those idle longest are the ones to close when calls slow down.
    const idle = pool.idle.pop();
    if (idle !== undefined) {
      pool.idleSince.pop();
      pool.inUse++;
      return Promise.resolve(this.#lease(pool, idle));
    }
    if (this.#open >= this.#options.maxConnections) {
      return undefined;
    }
    if (pool.live === 0) {
      this.#coldOpens++;
    }
    pool.inUse++;
    pool.live++;
    this.#open++;
    this.#opened++;
    return this.#connect(pool);
  }

  async #connect(pool: TenantPool): Promise<LeasedClient> {
    const client = new pg.Client(pool.config);
    if (this.#options.prepareStatements) {
      prepareParameterizedQueries(client);
    }
    watchConnectionLoss(client, (error) => {
      if (!broken.has(client)) {
        broken.add(client);
        this.#options.onError?.(error, pool.tenantId);
      }
      this.#closeIdle(pool, client);
    });
    // A transaction whose connection broke never returns it (Kysely releases
    // only after a commit or rollback that succeeded): once the connection
    // has ended, its lease is over.
    client.on("end", () => leases.get(client)?.(true));
    try {
      await client.connect();
    } catch (error) {
      pool.inUse--;
      pool.live--;
      this.#open--;
      if (pool.live === 0) {
        pool.emptied.forEach((done) => done());
      }
      this.#forgetIfEmpty(pool);
      this.#options.onError?.(error, pool.tenantId);
      this.#pump();
      throw new ConnectError(
        `the database of tenant "${pool.tenantId}" cannot be reached; retry later`,
        Code.Unavailable,
      );
    }
    return this.#lease(pool, client);
  }

  #lease(pool: TenantPool, client: pg.Client): LeasedClient {
    const leased = client as LeasedClient;
    let released = false;
    leased.release = (destroy?: boolean | Error) => {
      if (released) {
        return;
      }
      released = true;
      leases.delete(client);
      pool.inUse--;
      if (destroy || broken.has(client) || pool.retired || this.#closed) {
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
    if (pool.live === 0 && pool.inUse === 0 && this.#pools.get(pool.tenantId) === pool && !this.#waiters.some((w) => w.pool === pool)) {
      this.#pools.delete(pool.tenantId);
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
   * idle connections of tenants nobody waits for are closed.
   */
  #pump(): void {
    let blocked = 0;
    for (let i = 0; i < this.#waiters.length; ) {
      const waiter = this.#waiters[i]!;
      const pool = waiter.pool;
      if (pool.inUse >= this.#options.maxConnectionsPerTenant) {
        i++;
        continue;
      }
      if (blocked > this.#closing && pool.idle.length > 0) {
        this.#closeIdle(pool, pool.idle[0]!);
        i++;
        continue;
      }
      const granted = this.#tryGrant(pool);
      if (granted === undefined) {
        blocked++;
        i++;
        continue;
      }
      this.#waiters.splice(i, 1);
      clearTimeout(waiter.timer);
      granted.then(waiter.resolve, waiter.reject);
    }
    if (blocked > this.#closing) {
      this.#reclaim(blocked - this.#closing);
    }
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

/** What identifies an endpoint's pool, computed once per endpoint object rather than per lease. */
const fingerprints = new WeakMap<TenantEndpoint, string>();

/** Connections that were lost (see `watchConnectionLoss`); they are closed instead of reused. */
const broken = new WeakSet<pg.Client>();

/** The release of each leased connection, by connection. */
const leases = new WeakMap<pg.Client, (destroy: boolean) => void>();
