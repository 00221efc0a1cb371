import { Code, ConnectError } from "@connectrpc/connect";
import { OptimisticLockError, type EntityData, type EntityManager, type EntityMetadata, type FilterQuery } from "@mikro-orm/postgresql";
import type { Kysely } from "kysely";
import { randomUUID } from "node:crypto";
import { pageOf, type Tenancy } from "../mesh/index.ts";
import { Entry } from "./entities/entry.ts";
import { checkBody, checkEntryId, checkTags, checkTitle, entryCursor, readEntryPage } from "./entry-rules.ts";

/** The fields of a new entry. */
export interface EntryFields {
  title: string;
  body: string;
  tags: string[];
}

/** What changes in an update, field by field, and on what condition. */
export interface EntryChange {
  title?: string;
  body?: string;
  tags?: string[];
  /** Applies the change only if the entry's etag still equals this; empty for no condition. */
  etag: string;
}

/** An entry's fields as stored: what a read answers, managed by no unit of work. */
export type EntryData = Pick<Entry, "id" | "title" | "body" | "tags" | "version" | "createdAt" | "updatedAt">;

/** One page of a listing. */
export interface EntryPage {
  entries: Entry[];
  nextPageToken: string;
}

/** The entry's etag: its version, which every update bumps. */
export function etagOf(entry: EntryData): string {
  return String(entry.version);
}

/** Stores a new entry. */
export async function createEntry(em: EntityManager, fields: EntryFields): Promise<Entry> {
  const now = new Date();
  const entry = em.create(Entry, {
    id: randomUUID(),
    title: checkTitle(fields.title),
    body: checkBody(fields.body),
    tags: checkTags(fields.tags),
    version: 1,
    createdAt: now,
    updatedAt: now,
  });
  await em.persist(entry).flush();
  return entry;
}

/** The SQL that reads one entry by its id (`$1`), per ORM, compiled once by MikroORM's Kysely from Entry's metadata. */
const entryById = new WeakMap<EntityMetadata<Entry>, string>();

function entryByIdSql(em: EntityManager, meta: EntityMetadata<Entry>): string {
  let sql = entryById.get(meta);
  if (sql === undefined) {
    // The columns by name, so that a column a later migration adds changes nothing here.
    const columns = meta.props.flatMap((prop) => prop.fieldNames ?? []);
    const id = meta.properties.id.fieldNames[0]!;
    // Typed by table name only: the names come from the metadata, not from a schema type. Unqualified: the
    // connection's search_path is the tenant's Backend schema, so one text serves every tenant.
    const kysely = em.getKysely() as unknown as Kysely<Record<string, Record<string, unknown>>>;
    sql = kysely
      .selectFrom(meta.tableName)
      .select(columns)
      .where(id, "=", "")
      .compile().sql;
    entryById.set(meta, sql);
  }
  return sql;
}

/**
 * Returns an entry's fields, or NOT_FOUND. A read needs no entity, and so
 * no EntityManager of its own: one parameterized query on the tenant's
 * connection (`Tenancy.query`, prepared once per connection), its SQL made
 * by the ORM's Kysely and its row converted as MikroORM converts one for an
 * entity (dates, arrays), with nothing for a unit of work to track.
 */
export async function getEntry(tenancy: Pick<Tenancy, "orm" | "query">, id: string): Promise<EntryData> {
  const entryId = checkEntryId(id);
  // Only what every EntityManager shares is used: metadata, driver, Kysely.
  const em = tenancy.orm.em;
  const meta = em.getMetadata(Entry);
  const rows = await tenancy.query<EntityData<Entry>>(entryByIdSql(em, meta), [entryId]);
  if (rows[0] === undefined) {
    throw new ConnectError(`entry "${id}" not found`, Code.NotFound);
  }
  return em.getDriver().mapResult(rows[0], meta) as EntryData;
}

/** Returns an entry for the unit of work to change, or NOT_FOUND. */
async function loadEntry(em: EntityManager, id: string): Promise<Entry> {
  const entry = await em.findOne(Entry, { id: checkEntryId(id) });
  if (entry === null) {
    throw new ConnectError(`entry "${id}" not found`, Code.NotFound);
  }
  return entry;
}

/** Lists entries newest first, optionally only those carrying `tag`, one page at a time. */
export async function listEntries(
  em: EntityManager,
  request: { pageSize: number; pageToken: string; tag?: string | undefined },
): Promise<EntryPage> {
  const { size, after, tag } = readEntryPage(request);
  const where: FilterQuery<Entry>[] = [];
  if (tag !== undefined) {
    where.push({ tags: { $contains: [tag] } });
  }
  if (after !== undefined) {
    const createdAt = new Date(after[0]);
    where.push({ $or: [{ createdAt: { $lt: createdAt } }, { createdAt, id: { $lt: after[1] } }] });
  }
  const rows = await em.find(Entry, where.length === 0 ? {} : { $and: where }, {
    orderBy: [{ createdAt: "desc" }, { id: "desc" }],
    limit: size + 1,
  });
  const page = pageOf(rows, size, (last) => entryCursor(last, tag));
  return { entries: page.items, nextPageToken: page.nextPageToken };
}

/** Applies a change to an entry: NOT_FOUND if it is gone, ABORTED if its etag moved on. */
export async function updateEntry(em: EntityManager, id: string, change: EntryChange): Promise<Entry> {
  const entry = await loadEntry(em, id);
  if (change.etag !== "" && change.etag !== etagOf(entry)) {
    throw new ConnectError(`entry "${id}" has changed since etag ${change.etag}: read it again and retry`, Code.Aborted);
  }
  if (change.title !== undefined) {
    entry.title = checkTitle(change.title);
  }
  if (change.body !== undefined) {
    entry.body = checkBody(change.body);
  }
  if (change.tags !== undefined) {
    entry.tags = checkTags(change.tags);
  }
  entry.updatedAt = new Date();
  try {
    await em.flush();
  } catch (error) {
    if (error instanceof OptimisticLockError) {
      throw new ConnectError(`entry "${id}" was changed by another call at the same time: read it again and retry`, Code.Aborted);
    }
    throw error;
  }
  return entry;
}

/** Removes an entry, or NOT_FOUND. */
export async function deleteEntry(em: EntityManager, id: string): Promise<void> {
  const removed = await em.nativeDelete(Entry, { id: checkEntryId(id) });
  if (removed === 0) {
    throw new ConnectError(`entry "${id}" not found`, Code.NotFound);
  }
}
