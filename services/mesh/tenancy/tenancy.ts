import { AbstractMigrator } from "@mikro-orm/core/migrations";
import { Migration, MigrationStorage, Migrator } from "@mikro-orm/migrations";
import { Code, ConnectError } from "@connectrpc/connect";
import { ConnectionException, MikroORM, type EntityManager, type EntitySchema, type MigrationObject, type Transaction } from "@mikro-orm/postgresql";
import { createPostgreSqlTypeParsers } from "@mikro-orm/sql";
import { PostgresDialect } from "kysely";
import pg from "pg";
import Cursor from "pg-cursor";
import array from "postgres-array";
import { ConnectionBudget, type ConnectionBudgetOptions, type LeasedClient, type TenantEndpoint } from "./connection-budget.ts";
import { migrationTable, readAppliedMigrations } from "./migration-table.ts";
import { RequestLedger } from "./request-ledger.ts";
import { StorageQuota } from "./storage-quota.ts";
import { Placement, type TenantDirectory, type TenantRoute } from "./tenant-directory.ts";
import { TenantScope } from "./tenant-scope.ts";
import type { WriteFreezes } from "./write-freezes.ts";

/**
 * MikroORM's migration tracking, in the migration table of one tenant's
 * schema (see {@link TenantMigrator}), which looks for its table with
 * `to_regclass` rather than through information_schema: planning that view
 * costs PostgreSQL several milliseconds of CPU on a fresh connection, which
 * is what each tenant of a fleet rollout gets. Without the table, MikroORM's
 * own check runs and creates it (and the schema, where the login may).
 * Inside a run's transaction the look goes through that transaction, so
 * that a run takes one connection (a pooled tenant's lease takes the tenant
 * on once), and the run remembers the newest migration it found applied.
 */
class TrackingStorage extends MigrationStorage {
  #present = false;
  #transaction: Transaction | undefined;
  /** The newest migration applied, as the last read of the table found it; undefined before any read. */
  newestRead: string | undefined;

  constructor(driver: ConstructorParameters<typeof MigrationStorage>[0], options: ConstructorParameters<typeof MigrationStorage>[1]) {
    // A copy: the options are the ORM's, shared by every run, and `pin` sets the schema of this one.
    super(driver, { ...options });
  }

  /** Tracks the migrations of `schema`. */
  pin(schema: string): void {
    this.options.schema = schema;
  }

  override setMasterMigration(transaction: Transaction): void {
    super.setMasterMigration(transaction);
    this.#transaction = transaction;
  }

  override unsetMasterMigration(): void {
    super.unsetMasterMigration();
    this.#transaction = undefined;
  }

  /** The table is known to be there: no need to look. */
  knowPresent(): void {
    this.#present = true;
  }

  override async ensureTable(): Promise<void> {
    if (!this.#present) {
      const quoted = `${pg.escapeIdentifier(this.options.schema!)}.${pg.escapeIdentifier(migrationTable)}`;
      const [row] = await this.driver.getConnection().execute<{ present: boolean }[]>(`select to_regclass(${pg.escapeLiteral(quoted)}) is not null as present`, [], "all", this.#transaction);
      this.#present = row?.present === true;
    }
    if (!this.#present) {
      await super.ensureTable();
      this.#present = true;
    }
  }

  override async getExecutedMigrations(): ReturnType<MigrationStorage["getExecutedMigrations"]> {
    const executed = await super.getExecutedMigrations();
    const newest = executed.at(-1);
    this.newestRead = newest === undefined ? "" : this.getMigrationName(newest.name);
    return executed;
  }
}

/**
 * MikroORM's Migrator for one tenant's schema: its migration table is
 * there, and `up({ schema })` runs each migration with `search_path` set
 * there, so that the migrations' unqualified names land in it.
 */
class TenantMigrator extends Migrator {
  /** Declared only: the base constructor creates a storage before this is set, and MikroORM may create another later. */
  declare schema: string;

  /** `tracked`: the schema is known to have its migration table. */
  constructor(em: EntityManager, schema: string, tracked = false) {
    super(em);
    this.schema = schema;
    (this.storage as TrackingStorage).pin(schema);
    if (tracked) {
      (this.storage as TrackingStorage).knowPresent();
    }
  }

  /**
   * What MikroORM's Migrator does as it initialises but look for its
   * database on the server (the routed connection is always a tenant's
   * database, there already; the look took a lease of its own) and for its
   * migration table, which the run looks for inside its transaction.
   */
  override async init(): Promise<void> {
    // Migrator.init, less what it adds to AbstractMigrator.init (bracketed: protected).
    await AbstractMigrator.prototype["init"].call(this);
  }

  protected override createStorage(): MigrationStorage {
    const storage = new TrackingStorage(this.driver as ConstructorParameters<typeof MigrationStorage>[0], this.options);
    if (this.schema !== undefined) {
      storage.pin(this.schema);
    }
    return storage;
  }
}

/** Options of a {@link Tenancy}. */
export interface TenancyOptions {
  /**
   * The name of the schema this service owns for every tenant, such as
   * "backend": its schema in a tenant's database is the route's schema
   * prefix followed by it (just the name in a dedicated database).
   */
  schema: string;
  /** The service's entities, unqualified: they resolve in the tenant's schema. */
  entities: EntitySchema[];
  /** The service's migrations, oldest first. */
  migrations: MigrationObject[];
  /** Where tenants' routes come from. */
  directory: TenantDirectory;
  /** Tenants' write freezes, which hold their write calls. */
  freezes: WriteFreezes;
  /** Limits on the process's database connections. */
  connections: Omit<ConnectionBudgetOptions, "types">;
  /** How long a tenant's measured database size is trusted before it is measured again. */
  storageCheckIntervalMs?: number;
  /** Keys the fingerprints of requests that carry a request_id (see RequestLedger); never stored. */
  requestKey: Uint8Array;
}

/** What one migration run did to one tenant's schema. */
export interface MigrationOutcome {
  /** Migrations applied by this run, in order. */
  applied: string[];
  /** The newest migration applied now; empty when none is. */
  version: string;
}

/** A tenant's schema state, read without changing it. */
export interface SchemaState {
  /** The newest migration applied; empty when none is. */
  version: string;
  /** The newest migration the service knows. */
  latestVersion: string;
  /** Migrations not applied yet, in order. */
  pending: string[];
}

/**
 * Everything a service needs to reach its tenants' databases: one MikroORM
 * instance for the process (metadata discovered once) whose queries go
 * through a routing dialect to the current tenant's connections, the
 * connection budget behind it, and the tenant directory.
 */
export class Tenancy {
  readonly directory: TenantDirectory;
  /** Tenants' write freezes: the tenant interceptor holds a frozen tenant's write calls. */
  readonly freezes: WriteFreezes;
  readonly budget: ConnectionBudget;
  readonly scope = new TenantScope();
  readonly orm: MikroORM;
  /** Each tenant's storage limit, enforced on writes. */
  readonly storage: StorageQuota;
  /** Makes the service's creates safe to retry, with the `request_ids` table of its schema. */
  readonly requests: RequestLedger;
  readonly #schema: string;
  readonly #migrations: MigrationObject[];
  readonly #migrating = new Map<string, Promise<MigrationOutcome>>();
  /** Each migration's statements, by name, collected once (see `#migrateByStatements`); null for one the Migrator must run. */
  readonly #statements = new Map<string, string[] | null>();
  /** Endpoints by route: routes are cached by the directory, so each call need not build one. */
  readonly #endpoints = new WeakMap<TenantRoute, TenantEndpoint>();
  /**
   * The lease a migration run looked at its schema on (see `#migrateByStatements`),
   * by the run's endpoint: the run's first connection is that one, rather
   * than a second lease (for a pooled tenant, the tenant taken on again).
   */
  readonly #handoffs = new WeakMap<TenantEndpoint, LeasedClient>();

  constructor(options: TenancyOptions) {
    this.directory = options.directory;
    this.freezes = options.freezes;
    this.#schema = options.schema;
    this.#migrations = options.migrations;
    const types = new pg.TypeOverrides();
    for (const [oid, parser] of Object.entries(createPostgreSqlTypeParsers((s) => array.parse(s)))) {
      types.setTypeParser(Number(oid), parser);
    }
    this.budget = new ConnectionBudget({ ...options.connections, types, prepareStatements: true });
    this.requests = new RequestLedger({ key: options.requestKey });
    this.storage = new StorageQuota({
      intervalMs: options.storageCheckIntervalMs ?? 60_000,
      maxEntries: 10_000,
      measure: (route) => {
        const endpoint = this.endpointOf(route);
        return this.scope.run(endpoint, async () => {
          const [row] = await this.fork().execute<{ bytes: string }[]>(endpoint.sessionRole ? pooledTenantSize : "select pg_database_size(current_database()) as bytes");
          return Number(row!.bytes);
        });
      },
    });
    const budget = this.budget;
    const scope = this.scope;
    const handoffs = this.#handoffs;
    this.orm = new MikroORM({
      entities: options.entities,
      // The routed connection always points at an existing tenant database.
      // MikroORM's Migrator still checks that `dbName` exists on the server
      // (and would create it otherwise), so name one every server has.
      dbName: "template1",
      // No schema: the entities' tables and all SQL are unqualified, resolved by each connection's
      // search_path (the tenant's schema), so that one SQL text serves every tenant of any placement.
      ensureDatabase: false,
      allowGlobalContext: false,
      discovery: { warnWhenNoEntities: false },
      driverOptions: new PostgresDialect({
        pool: {
          connect: () => {
            const endpoint = scope.current();
            const held = handoffs.get(endpoint);
            if (held !== undefined) {
              handoffs.delete(endpoint);
              return Promise.resolve(held);
            }
            return budget.acquire(endpoint).catch((error: unknown) => {
              // MikroORM turns whatever is not a DriverException into one that
              // copies its fields: what the budget said (a ConnectError, such as
              // UNAVAILABLE) would reach the error interceptor as an unknown
              // error. One of its own kind passes untouched, with the cause kept.
              throw Object.assign(new ConnectionException(error as Error), { cause: error });
            });
          },
          end: async () => {},
          options: {},
        },
        cursor: Cursor,
      }),
      extensions: [Migrator],
      migrations: {
        migrationsList: options.migrations,
        tableName: migrationTable,
        snapshot: false,
        silent: true,
        transactional: true,
        allOrNothing: true,
      },
    });
  }

  /**
   * The connection target of a tenant's route: the service's schema there
   * (the route's prefix and the service's name), and for a pooled tenant
   * the role its leases take on. A route with no placement is dedicated.
   */
  endpointOf(route: TenantRoute): TenantEndpoint {
    let endpoint = this.#endpoints.get(route);
    if (endpoint === undefined) {
      const pooled = route.placement === Placement.POOLED;
      if (pooled && route.sessionRole === "") {
        throw new ConnectError(`the route of pooled tenant "${route.tenantId}" names no session role`, Code.Internal);
      }
      const schema = route.schemaPrefix + this.#schema;
      if (Buffer.byteLength(schema) > maxIdentifierBytes) {
        throw new ConnectError(`tenant "${route.tenantId}"'s ${this.#schema} schema "${schema}" is longer than PostgreSQL's names (${maxIdentifierBytes} bytes)`, Code.Internal);
      }
      endpoint = {
        tenantId: route.tenantId,
        host: route.host,
        port: route.port,
        database: route.database,
        user: route.user,
        password: route.password,
        schema,
        sessionRole: pooled ? route.sessionRole : "",
      };
      this.#endpoints.set(route, endpoint);
    }
    return endpoint;
  }

  /**
   * The connection target of a database named directly, with its own login
   * (a cluster's template database, for one): this service's schema there
   * is its name, as in a tenant's dedicated database, or `schemaPrefix`
   * followed by its name, reached as `sessionRole` over the login (a
   * restore's schemas in a pool database).
   */
  databaseEndpoint(target: { host: string; port: number; database: string; user: string; password: string; sessionRole?: string; schemaPrefix?: string }): TenantEndpoint {
    const { host, port, database, user, password, sessionRole = "", schemaPrefix = "" } = target;
    const schema = schemaPrefix + this.#schema;
    if (Buffer.byteLength(schema) > maxIdentifierBytes) {
      throw new ConnectError(`the ${this.#schema} schema "${schema}" is longer than PostgreSQL's names (${maxIdentifierBytes} bytes)`, Code.InvalidArgument);
    }
    const tenantId = `database:${host}:${port}/${database}${schemaPrefix === "" ? "" : `/${schemaPrefix}`}${sessionRole === "" ? "" : ` as ${sessionRole}`}`;
    return { tenantId, host, port, database, user, password, schema, sessionRole };
  }

  /** An EntityManager of its own for one call. Use it inside the tenant's scope. */
  fork(): EntityManager {
    return this.orm.em.fork();
  }

  /**
   * Runs one parameterized statement (`$1`…) on a connection of the current
   * tenant (inside its scope), as a prepared statement of that connection,
   * and returns its rows: for a read that needs neither entities nor a
   * transaction, whose SQL is made once, by the ORM's Kysely.
   */
  async query<Row>(sql: string, values: unknown[]): Promise<Row[]> {
    const client = await this.budget.acquire(this.scope.current());
    try {
      return (await client.query(sql, values)).rows as Row[];
    } finally {
      client.release();
    }
  }

  /**
   * Applies this service's pending migrations to a tenant's database (or to
   * any database named by an endpoint), with `to` only those up to that
   * migration (a restore reaching a backup's versions). Runs for the same
   * endpoint are serialised in this process. FAILED_PRECONDITION when `to`
   * is no migration of the service, or the schema is past it.
   */
  migrate(target: TenantRoute | TenantEndpoint, options: { to?: string } = {}): Promise<MigrationOutcome> {
    // Its own endpoint object, so that pooled connections take the tenant on again after a run (see `TenantEndpoint.migration`).
    const endpoint: TenantEndpoint = { ...("status" in target ? this.endpointOf(target) : target), migration: true };
    const schema = endpoint.schema || this.#schema;
    const names = this.migrationNames();
    const last = options.to === undefined ? names.length - 1 : names.indexOf(options.to);
    if (last < 0 && options.to !== undefined) {
      throw new ConnectError(`${this.#schema} has no migration "${options.to}" (it knows ${names.join(", ")}): a newer version of the service wrote it`, Code.FailedPrecondition);
    }
    const running = this.#migrating.get(endpoint.tenantId);
    const next = (running ?? Promise.resolve())
      .catch(() => undefined)
      .then(() =>
        this.scope.run(endpoint, async () => {
          const fresh = await this.#migrateByStatements(endpoint, schema, this.#migrations.slice(0, last + 1), options.to !== undefined);
          if (typeof fresh === "object") {
            return fresh;
          }
          try {
            // A Migrator per run: one remembers its tracking table per schema name, not per database.
            const migrator = new TenantMigrator(this.fork(), schema, fresh === "tracked");
            if (options.to !== undefined) {
              const beyond = new Set(names.slice(last + 1));
              const past = (await migrator.getExecuted({ schema })).find((m) => beyond.has(m.name));
              if (past !== undefined) {
                throw new ConnectError(`the ${this.#schema} schema is at "${past.name}" already, past "${options.to}"`, Code.FailedPrecondition);
              }
            }
            const applied = await migrator.up(options.to === undefined ? { schema } : { to: options.to, schema });
            // What this run applied is the newest in the table (ordered by id); when it applied none, the newest the run read there.
            const version = applied.at(-1)?.name ?? (migrator.getStorage() as TrackingStorage).newestRead ?? "";
            return { applied: applied.map((m) => m.name), version };
          } finally {
            // The look's lease, if the run never asked for a connection.
            this.#handoffs.get(endpoint)?.release();
            this.#handoffs.delete(endpoint);
          }
        }),
      )
      .finally(() => {
        if (this.#migrating.get(endpoint.tenantId) === next) {
          this.#migrating.delete(endpoint.tenantId);
        }
      });
    this.#migrating.set(endpoint.tenantId, next);
    return next;
  }

  /**
   * Migrates a schema in one round trip rather than the Migrator's dozens,
   * when every migration it lacks is made of statements alone: those
   * statements and their rows in the migration table, in one
   * multi-statement query, which PostgreSQL runs as one transaction, as the
   * Migrator runs them (`allOrNothing`): all applied and recorded, or
   * nothing. A schema never migrated (a new tenant's) gets its migration
   * table in the same query, made as the Migrator makes it, and the schema
   * itself first where it is missing (a dedicated database's), as the
   * Migrator does; one migrated before has its migration table read first
   * for what it lacks (applied by the migrations found there, as the
   * Migrator reads it). Otherwise the Migrator does the work: "tracked" when
   * the schema has a migration table; undefined when it has none. That is
   * when `upTo` (a run up to some migration: the Migrator checks the schema
   * is not past it), when a migration the schema lacks is not made of
   * statements alone (it runs SQL itself or outside a transaction), or when
   * the query failed: nothing was changed, and the Migrator meets the same
   * failure and reports it as it always has (or finds the schema migrated by
   * a run elsewhere meanwhile). Then the lease this took goes on to the
   * Migrator's run (see `#handoffs`): the look and the run share one.
   */
  async #migrateByStatements(endpoint: TenantEndpoint, schema: string, migrations: MigrationObject[], upTo: boolean): Promise<MigrationOutcome | "tracked" | undefined> {
    if (migrations.length === 0) {
      return undefined;
    }
    const quotedSchema = pg.escapeIdentifier(schema);
    const table = `${quotedSchema}.${pg.escapeIdentifier(migrationTable)}`;
    const client = await this.budget.acquire(endpoint);
    let handedOff = false;
    /** The Migrator's run goes on on this lease (see `#handoffs`). */
    const handOff = () => {
      this.#handoffs.set(endpoint, client);
      handedOff = true;
    };
    try {
      const { rows } = await client.query<{ tracked: boolean; present: boolean }>(
        `select to_regclass(${pg.escapeLiteral(table)}) is not null as tracked, to_regnamespace(${pg.escapeLiteral(quotedSchema)}) is not null as present`,
      );
      const { tracked, present } = rows[0]!;
      if (tracked && upTo) {
        handOff();
        return "tracked";
      }
      let pending = migrations;
      if (tracked) {
        // As the Migrator reads it: by id, the newest last.
        const executed = (await client.query<{ name: string }>(`select "name" from ${table} order by "id"`)).rows.map((row) => row.name);
        const done = new Set(executed);
        pending = migrations.filter((m) => !done.has(m.name));
        if (pending.length === 0) {
          return { applied: [], version: executed.at(-1) ?? "" };
        }
      }
      const statements: string[] = [];
      for (const migration of pending) {
        const own = await this.#statementsOf(migration);
        if (own === null) {
          handOff();
          return tracked ? "tracked" : undefined;
        }
        statements.push(...own);
      }
      const names = pending.map((m) => m.name);
      const sql = [
        ...(present ? [] : [`create schema ${quotedSchema}`]),
        // The Migrator's statements: unqualified names land in the schema; the lease sets its path again after (see `TenantEndpoint.migration`).
        `set search_path to ${quotedSchema}`,
        // MikroORM's MigrationStorage.ensureTable makes it so (a spec compares the two).
        ...(tracked ? [] : [`create table ${table} ("id" serial primary key, "name" varchar(255) not null, "executed_at" timestamptz(6) not null default current_timestamp(6))`]),
        ...statements,
        `insert into ${table} ("name") values ${names.map((name) => `(${pg.escapeLiteral(name)})`).join(", ")}`,
        "reset search_path",
      ].join("\n;\n"); // a line of its own for each semicolon: a statement may end in a comment
      try {
        await client.query(sql);
      } catch (error) {
        if (typeof (error as { code?: unknown }).code === "string" && /^[0-9A-Z]{5}$/.test((error as { code: string }).code)) {
          // PostgreSQL refused a statement and rolled it all back: the Migrator runs them one by one and says which.
          handOff();
          return tracked ? "tracked" : undefined;
        }
        throw error;
      }
      return { applied: names, version: names.at(-1)! };
    } finally {
      if (!handedOff) {
        client.release();
      }
    }
  }

  /** A migration's statements, or null when it does more than add statements (see `#migrateByStatements`). */
  async #statementsOf({ name, class: MigrationClass }: MigrationObject): Promise<string[] | null> {
    let statements = this.#statements.get(name);
    if (statements === undefined) {
      statements = await collectStatements(new (MigrationClass as new (...args: ConstructorParameters<typeof Migration>) => Migration)(this.orm.em.getDriver(), this.orm.config));
      this.#statements.set(name, statements);
    }
    return statements;
  }

  /** The migrations this service knows, oldest first. */
  migrationNames(): string[] {
    return this.#migrations.map((m) => m.name);
  }

  /** Reads a tenant's schema state without creating or changing anything. */
  schemaState(route: TenantRoute): Promise<SchemaState> {
    const endpoint = this.endpointOf(route);
    return this.scope.run(endpoint, async () => {
      const executed = (await readAppliedMigrations(this.fork(), endpoint.schema || this.#schema)) ?? [];
      const done = new Set(executed);
      return {
        version: executed.at(-1) ?? "",
        latestVersion: this.#migrations.at(-1)?.name ?? "",
        pending: this.#migrations.map((m) => m.name).filter((name) => !done.has(name)),
      };
    });
  }

  /** Closes the ORM and every connection. */
  async close(timeoutMs?: number): Promise<void> {
    await this.orm.close();
    await this.budget.close(timeoutMs);
  }
}

/** Thrown by a migration that runs SQL itself while its statements are collected. */
class RunsSql extends Error {}

/**
 * The statements a migration adds (`addSql`) when it is asked to go up,
 * without running any; null when it runs outside a transaction, runs SQL
 * itself (`execute`, an EntityManager) or adds anything but SQL text.
 */
async function collectStatements(migration: Migration): Promise<string[] | null> {
  if (!migration.isTransactional()) {
    return null;
  }
  const refuse = () => {
    throw new RunsSql();
  };
  migration.execute = refuse;
  migration.getEntityManager = refuse;
  try {
    await migration.up();
  } catch (error) {
    if (error instanceof RunsSql) {
      return null;
    }
    throw error;
  }
  const statements: string[] = [];
  for (const statement of migration.getQueries()) {
    if (typeof statement !== "string") {
      return null;
    }
    const text = statement.trim().replace(/;+$/, "");
    if (text !== "") {
      statements.push(text);
    }
  }
  return statements;
}

/**
 * What a pooled tenant's data takes in its pool database: the relations its
 * role owns (tables, with their indexes and TOAST), measured in its lease,
 * where `current_user` is the tenant's role. Found through the role's owner
 * dependencies (pg_shdepend, indexed by the role) rather than by reading
 * every relation of the pool database (pg_class has no index by owner: 30
 * ms per measurement with 1,000 tenants in it); the CTE leaves the planner
 * no other index to take.
 */
const pooledTenantSize = `with owned as materialized (
    select classid, objid, dbid from pg_shdepend where refclassid = 'pg_authid'::regclass and refobjid = current_user::regrole and deptype = 'o'
  )
  select coalesce(sum(pg_total_relation_size(c.oid)), 0) as bytes from owned o join pg_class c on c.oid = o.objid
  where o.classid = 'pg_class'::regclass and o.dbid = (select oid from pg_database where datname = current_database()) and c.relkind in ('r', 'm', 'p')`;

/** The longest name PostgreSQL keeps whole (NAMEDATALEN - 1); it would cut a longer schema name short. */
const maxIdentifierBytes = 63;
