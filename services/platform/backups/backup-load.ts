import { Code, ConnectError } from "@connectrpc/connect";
import { pipeline } from "node:stream/promises";
import { Writable, type Readable } from "node:stream";
import pg from "pg";
import { from as copyFrom, to as copyTo } from "pg-copy-streams";
import type { Logger } from "../../mesh/index.ts";
import { compressionOf, qualifiedName, type BackupManifest, type ManifestTable } from "./backup-manifest.ts";
import { fileContext, type DataKey } from "./backup-envelope.ts";
import type { BackupKey, BackupStorage } from "./backup-storage.ts";
import { decompressing, isDecompressionError } from "./compressed-blocks.ts";
import { openStream } from "./sealed-stream.ts";
import { TableLoader } from "./table-loader.ts";
import type { TenantConnection } from "./table-reader.ts";
import { runTaskGraph, type Task } from "./task-graph.ts";
import { columnList, constraintsToSetAside, DigestTap, listTables, sameNames, type SchemaNames, type SetAside } from "./tenant-catalog.ts";

/** What {@link loadBackup} loads, and where. */
export interface BackupLoad {
  /** A connection to the database loaded, as the owner of its schemas, at the backup's schema versions. */
  client: pg.Client;
  /**
   * Opens another connection like `client`, to load and index tables side
   * by side; without it every table goes through `client`.
   */
  connect?: () => Promise<pg.Client>;
  /** How many connections load at once, `client` included, when `connect` is given (default {@link loadConnections}). */
  connections?: number;
  /**
   * How to connect like `client`, from another thread: given, the tables
   * are copied in by a thread of their own (see {@link TableLoader}), over
   * a connection of its own, rather than by this one.
   */
  connection?: TenantConnection;
  key: BackupKey;
  manifest: BackupManifest;
  dataKey: DataKey;
  storage: BackupStorage;
  /** Also read every table back once loaded and compare it with the manifest (a verification drill). */
  readBack: boolean;
  /** Where the manifest's schemas (named by service) are loaded: by default schemas of those names. */
  names?: SchemaNames;
  /**
   * A schema made for the load beforehand, owned by the role loading, in
   * which it keeps what it set aside (a pooled tenant's role may not create
   * schemas); the load drops its record there, and the schema is its
   * maker's to drop. By default the load makes {@link loadStateSchema} and
   * drops it.
   */
  stateSchema?: string;
  /** Where each part of the load logs its duration (debug), to see where a restore's time goes. */
  log?: Logger;
}

/** Connections a load uses by default: two keep a core each busy (one table copied while another is indexed or analyzed). */
export const loadConnections = 2;

/**
 * The schema in which a load keeps, until it ends, what it set aside: a
 * load started again after a crash finds there what to rebuild.
 */
export const loadStateSchema = "tenantry_restore";

/**
 * Loads a backup into a database migrated to the backup's versions: the
 * tables' columns checked against the manifest; foreign keys, primary
 * keys, unique constraints and indexes set aside (and what was set aside
 * recorded in the database, in schema {@link loadStateSchema}); then, over
 * the connections, the largest tables first, each table emptied and loaded
 * with binary COPY from its file in a transaction of its own (its rows
 * frozen, rows and SHA-256 compared with the manifest), its indexes and
 * keys built again as soon as it is loaded, and then ANALYZEd; last,
 * foreign keys and sequences, and the record of what was set aside
 * dropped. A load that fails leaves the database partly loaded (the
 * restore drops it); one started again after a crash drops what the first
 * had rebuilt, from the record, and loads every table afresh.
 * FAILED_PRECONDITION naming the table whose columns, rows or digest differ,
 * or the file that fails its integrity check.
 */
export async function loadBackup(load: BackupLoad): Promise<void> {
  const { client, manifest } = load;
  const names = load.names ?? sameNames;
  // The other connections are opened while the first sets keys and indexes aside.
  const extra = load.connect === undefined ? 0 : Math.max(0, Math.min(manifest.tables.length, load.connections ?? loadConnections) - 1);
  const more = Array.from({ length: extra }, () => load.connect!());
  const opened = Promise.allSettled(more);
  const loader = load.connection === undefined ? undefined : new TableLoader();
  const loaderOpened = loader?.open(load.connection!);
  loaderOpened?.catch(() => undefined);
  try {
    const setAside = await timed(load.log, "set aside", () => setAsideForLoad(client, manifest, names, load.stateSchema));
    const connections = [client, ...(await Promise.all(more))];
    // Each table's transaction commits without waiting for its WAL to reach the disk: the last transaction
    // below does wait, and with it for all the WAL before it (a crash before then loads again from the start).
    await Promise.all(connections.map((connection) => connection.query("set synchronous_commit = off")));
    await loaderOpened;
    const { tasks, later } = loadTasks(load, names, setAside, loader);
    for (const task of tasks) {
      const run = task.run;
      task.run = (connection) => timed(load.log, task.name, () => run(connection));
    }
    await runTaskGraph(connections, tasks);
    await client.query("reset synchronous_commit");
    await timed(load.log, "foreign keys and sequences", () => inTransaction(client, async () => {
      for (const statement of later.flatMap((item) => item.rebuild)) {
        await client.query(statement);
      }
      for (const sequence of manifest.sequences) {
        await client.query("select pg_catalog.setval($1::pg_catalog.regclass, $2::bigint, $3)", [names.quoted(sequence), sequence.lastValue, sequence.isCalled]);
      }
      await client.query(
        load.stateSchema === undefined ? `drop schema ${pg.escapeIdentifier(loadStateSchema)} cascade` : `drop table ${pg.escapeIdentifier(load.stateSchema)}.set_aside`,
      );
    }));
    await loader?.close();
  } finally {
    await loader?.abort();
    for (const outcome of await opened) {
      if (outcome.status === "fulfilled") {
        await outcome.value.end().catch(() => undefined);
      }
    }
  }
  if (load.readBack) {
    await inTransaction(client, async () => {
      // Freshly loaded tables hold their rows in the order loaded: a plain scan from the start reads them back in it.
      await client.query("set local synchronize_seqscans = off");
      for (const table of manifest.tables) {
        const tap = new DigestTap();
        const source = client.query(copyTo(`copy ${names.quoted(table)} (${columnList(table.columns)}) to stdout (format binary)`));
        await pipeline(source, tap, discard());
        compare(load.key, table, { rows: source.rowCount, sha256: tap.digest() }, "reads back");
      }
    });
  }
}

/**
 * In one transaction: checks the tables against the manifest, sets aside
 * their keys and indexes (those a load that stopped recorded, if there is
 * such a record; else those the database has, recording them) and returns
 * them.
 */
async function setAsideForLoad(client: pg.Client, manifest: BackupManifest, names: SchemaNames, stateSchema: string | undefined): Promise<SetAside[]> {
  const schemas = Object.keys(manifest.services).map((s) => names.physical(s));
  const state = stateSchema ?? loadStateSchema;
  const record = `${pg.escapeIdentifier(state)}.set_aside`;
  return inTransaction(client, async () => {
    await checkTables(client, manifest, names);
    const { rows } = await client.query<{ recorded: boolean }>("select pg_catalog.to_regclass($1) is not null as recorded", [record]);
    let items: SetAside[];
    if (rows[0]!.recorded) {
      items = (await client.query<{ items: SetAside[] }>(`select items from ${record}`)).rows[0]!.items;
    } else {
      items = await constraintsToSetAside(client, schemas);
      await client.query(`${stateSchema === undefined ? `create schema ${pg.escapeIdentifier(state)}; ` : ""}create table ${record} (items jsonb not null)`);
      await client.query(`insert into ${record} (items) values ($1)`, [JSON.stringify(items)]);
    }
    if (items.length > 0) {
      await client.query(items.map((item) => item.drop).join(";\n"));
    }
    return items;
  });
}

/**
 * The tasks of loading every table, largest first, and rebuilding its
 * indexes and keys once it is loaded, then ANALYZE of it; and what is
 * rebuilt once all are done (foreign keys).
 */
function loadTasks(load: BackupLoad, names: SchemaNames, setAside: SetAside[], loader: TableLoader | undefined): { tasks: Task<pg.Client>[]; later: SetAside[] } {
  const tables = load.manifest.tables.toSorted((a, b) => b.storedBytes - a.storedBytes);
  const tasks: Task<pg.Client>[] = [];
  const placed = new Set<SetAside>();
  let previous: Task<pg.Client> | undefined;
  tables.forEach((table, rank) => {
    const name = names.quoted(table);
    // The work of larger tables goes first: what is left of the largest is the longest to do. Tables are
    // copied one at a time (a copy keeps PostgreSQL and Platform busy at once: two would only slow each
    // other), while the other connections index and analyze the tables already copied.
    const copy: Task<pg.Client> = { name: `load ${name}`, priority: 3 * rank, after: previous === undefined ? [] : [previous], run: (client) => (loader === undefined ? inTransaction(client, () => copyIn(client, load, names, table)) : copyOnThread(loader, load, names, table)) };
    previous = copy;
    const builds = setAside
      .filter((item) => item.table === name && item.kind !== "foreign-key")
      .map((item): Task<pg.Client> => {
        placed.add(item);
        return {
          name: item.rebuild[0]!,
          priority: 3 * rank + 1,
          after: [copy],
          async run(client) {
            // Each statement its own transaction: a key's constraint waits only for the index builds of other connections.
            for (const statement of item.rebuild) {
              await client.query(statement);
            }
          },
        };
      });
    // After the indexes: ANALYZE also gathers the statistics of indexed expressions.
    const analyze: Task<pg.Client> = { name: `analyze ${name}`, priority: 3 * rank + 2, after: [copy, ...builds], run: (client) => client.query(`analyze ${name}`).then(() => undefined) };
    tasks.push(copy, ...builds, analyze);
  });
  return { tasks, later: setAside.filter((item) => !placed.has(item)) };
}

/** Runs `work`, logging how long it took (debug). */
async function timed<T>(log: Logger | undefined, part: string, work: () => Promise<T>): Promise<T> {
  const started = performance.now();
  const result = await work();
  log?.debug({ part, ms: Math.round(performance.now() - started) }, "restore load part done");
  return result;
}

/** Runs `work` in a transaction of `client`, rolled back if it fails. */
async function inTransaction<T>(client: pg.Client, work: () => Promise<T>): Promise<T> {
  await client.query("begin");
  try {
    const result = await work();
    await client.query("commit");
    return result;
  } catch (error) {
    await client.query("rollback").catch(() => undefined);
    throw error;
  }
}

/** Refuses a database whose tables are not the manifest's, with the same columns (each schema named by service, as in the manifest). */
async function checkTables(client: pg.Client, manifest: BackupManifest, names: SchemaNames): Promise<void> {
  const found = await listTables(client, Object.keys(manifest.services).map((s) => names.physical(s)));
  const present = new Map(found.map((t) => ({ ...t, schema: names.logical(t.schema)! })).map((t) => [qualifiedName(t), t]));
  for (const table of manifest.tables) {
    const name = qualifiedName(table);
    const found = present.get(name);
    present.delete(name);
    const signature = (columns: ManifestTable["columns"]) => columns.map((c) => `${c.name} ${c.type}`).join(", ");
    if (found === undefined) {
      throw new ConnectError(`table ${name} of backup "${manifest.backupId}" is missing at the backup's schema versions: the services' migrations no longer make it`, Code.FailedPrecondition);
    }
    if (signature(found.columns) !== signature(table.columns)) {
      throw new ConnectError(
        `table ${name} has columns (${signature(found.columns)}) at the backup's schema versions, but backup "${manifest.backupId}" holds (${signature(table.columns)}): the services' migrations changed since it was taken`,
        Code.FailedPrecondition,
      );
    }
  }
  const extra = [...present.keys()];
  if (extra.length > 0) {
    throw new ConnectError(`backup "${manifest.backupId}" has no table ${extra.join(", ")}, which the backup's schema versions make: the services' migrations changed since it was taken`, Code.FailedPrecondition);
  }
}

/** Empties one table and loads it from its file, checking rows and digest against the manifest; in a transaction. */
async function copyIn(client: pg.Client, load: BackupLoad, names: SchemaNames, table: ManifestTable): Promise<void> {
  const what = fileOf(load, table);
  const file = await openFile(load, table);
  const tap = new DigestTap();
  // Frozen as loaded (emptied in the same transaction): no reader after it has hint bits to write, ANALYZE first.
  await client.query(`truncate ${names.quoted(table)}`);
  const sink = client.query(copyFrom(`copy ${names.quoted(table)} (${columnList(table.columns)}) from stdin (format binary, freeze)`));
  try {
    await pipeline(file, openStream(load.dataKey.key, fileContext(load.key, table.file), what), decompressing(compressionOf(load.manifest)), tap, sink);
  } catch (error) {
    throw fileFailure(error, what);
  }
  compare(load.key, table, { rows: sink.rowCount, sha256: tap.digest() }, "loads");
}

/** Loads one table as {@link copyIn} does, on `loader`'s thread and connection, in a transaction of its own there. */
async function copyOnThread(loader: TableLoader, load: BackupLoad, names: SchemaNames, table: ManifestTable): Promise<void> {
  const what = fileOf(load, table);
  const file = await openFile(load, table);
  const loaded = await loader
    .load(file, {
      truncate: `truncate ${names.quoted(table)}`,
      sql: `copy ${names.quoted(table)} (${columnList(table.columns)}) from stdin (format binary, freeze)`,
      compression: compressionOf(load.manifest),
      key: load.dataKey.key,
      context: fileContext(load.key, table.file),
      what,
    })
    .catch((error: unknown) => {
      throw fileFailure(error, what);
    });
  compare(load.key, table, loaded, "loads");
}

/** How errors name a table's file. */
function fileOf(load: BackupLoad, table: ManifestTable): string {
  return `file ${table.file} (${qualifiedName(table)}) of backup "${load.key.backupId}"`;
}

/** A table's file as stored; FAILED_PRECONDITION when it is missing. */
function openFile(load: BackupLoad, table: ManifestTable): Promise<Readable> {
  return load.storage.get(load.key, table.file).catch((error: NodeJS.ErrnoException) => {
    throw error.code === "ENOENT" ? new ConnectError(`${fileOf(load, table)} is missing from storage`, Code.FailedPrecondition) : error;
  });
}

/** What a failure to load `what` is thrown as: a file that fails its integrity check FAILED_PRECONDITION, anything else as it is. */
function fileFailure(error: unknown, what: string): unknown {
  const message = (error as Error).message;
  if (message.includes(what)) {
    // The auth tag, checked at the end, did not match.
    return new ConnectError(message, Code.FailedPrecondition);
  }
  // Bytes decrypted from a changed file, or with another backup's key, are not gzip or zstd (or not
  // COPY's binary format) and fail before the tag is reached: the same fault, said the same way.
  if (isDecompressionError(error) || (error as { code?: string }).code === "22P04") {
    return new ConnectError(`${what} failed its integrity check: it was changed, cut short, or belongs to another backup (${message})`, Code.FailedPrecondition);
  }
  return error;
}

function compare(key: BackupKey, table: ManifestTable, found: { rows: number; sha256: string }, doing: string): void {
  if (found.rows !== table.rows || found.sha256 !== table.sha256) {
    throw new ConnectError(
      `table ${qualifiedName(table)} ${doing} as ${found.rows} rows with SHA-256 ${found.sha256}, but backup "${key.backupId}" recorded ${table.rows} rows with SHA-256 ${table.sha256}`,
      Code.FailedPrecondition,
    );
  }
}

function discard(): Writable {
  return new Writable({ write: (_chunk, _encoding, done) => done() });
}
