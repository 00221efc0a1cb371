import { Code, ConnectError } from "@connectrpc/connect";
import { OptimisticLockError, type EntityManager, type FilterQuery } from "@mikro-orm/postgresql";
import { randomUUID } from "node:crypto";
import { Entry } from "./entities/entry.ts";

/** Limits on an entry's fields. */
export const entryLimits = {
  titleChars: 200,
  bodyChars: 65_536,
  tags: 20,
  tagPattern: /^[a-z0-9_-]{1,40}$/,
  pageSize: 50,
  maxPageSize: 500,
} as const;

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

/** One page of a listing. */
export interface EntryPage {
  entries: Entry[];
  nextPageToken: string;
}

/** The entry's etag: its version, which every update bumps. */
export function etagOf(entry: Entry): string {
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

/** Returns an entry, or NOT_FOUND. */
export async function getEntry(em: EntityManager, id: string): Promise<Entry> {
  const entry = await em.findOne(Entry, { id: checkId(id) });
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
  if (request.pageSize < 0) {
    throw new ConnectError("page_size cannot be negative", Code.InvalidArgument);
  }
  const size = Math.min(request.pageSize || entryLimits.pageSize, entryLimits.maxPageSize);
  const tag = request.tag === undefined ? undefined : checkTags([request.tag], "tag")[0];
  const after = request.pageToken === "" ? undefined : readPageToken(request.pageToken, tag);
  const where: FilterQuery<Entry>[] = [];
  if (tag !== undefined) {
    where.push({ tags: { $contains: [tag] } });
  }
  if (after !== undefined) {
    where.push({ $or: [{ createdAt: { $lt: after.createdAt } }, { createdAt: after.createdAt, id: { $lt: after.id } }] });
  }
  const rows = await em.find(Entry, where.length === 0 ? {} : { $and: where }, {
    orderBy: [{ createdAt: "desc" }, { id: "desc" }],
    limit: size + 1,
  });
  const entries = rows.slice(0, size);
  const last = entries.at(-1);
  return {
    entries,
    nextPageToken: rows.length > size && last !== undefined ? writePageToken(last, tag) : "",
  };
}

/** Applies a change to an entry: NOT_FOUND if it is gone, ABORTED if its etag moved on. */
export async function updateEntry(em: EntityManager, id: string, change: EntryChange): Promise<Entry> {
  const entry = await getEntry(em, id);
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
  const removed = await em.nativeDelete(Entry, { id: checkId(id) });
  if (removed === 0) {
    throw new ConnectError(`entry "${id}" not found`, Code.NotFound);
  }
}

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function checkId(id: string): string {
  if (!uuidPattern.test(id)) {
    throw new ConnectError(`malformed entry id ${JSON.stringify(id.slice(0, 60))}: entry ids are UUIDs`, Code.InvalidArgument);
  }
  return id.toLowerCase();
}

function checkText(value: string, field: string, max: number): string {
  if (value.includes("\u0000")) {
    throw new ConnectError(`${field} cannot contain NUL characters`, Code.InvalidArgument);
  }
  const length = [...value].length;
  if (length > max) {
    throw new ConnectError(`${field} is ${length} characters long; the most is ${max}`, Code.InvalidArgument);
  }
  return value;
}

function checkTitle(title: string): string {
  if (title.trim() === "") {
    throw new ConnectError("title cannot be empty", Code.InvalidArgument);
  }
  return checkText(title, "title", entryLimits.titleChars);
}

function checkBody(body: string): string {
  return checkText(body, "body", entryLimits.bodyChars);
}

function checkTags(tags: string[], field = "tags"): string[] {
  const unique = [...new Set(tags)];
  if (unique.length > entryLimits.tags) {
    throw new ConnectError(`an entry carries at most ${entryLimits.tags} tags; got ${unique.length}`, Code.InvalidArgument);
  }
  for (const tag of unique) {
    if (!entryLimits.tagPattern.test(tag)) {
      throw new ConnectError(
        `malformed ${field} ${JSON.stringify(tag.slice(0, 60))}: use 1 to 40 lower-case letters, digits, "-" or "_"`,
        Code.InvalidArgument,
      );
    }
  }
  return unique;
}

interface PageCursor {
  createdAt: Date;
  id: string;
}

function writePageToken(entry: Entry, tag: string | undefined): string {
  return Buffer.from(JSON.stringify([entry.createdAt.toISOString(), entry.id, tag ?? null])).toString("base64url");
}

function readPageToken(token: string, tag: string | undefined): PageCursor {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    parsed = undefined;
  }
  if (
    !Array.isArray(parsed) ||
    parsed.length !== 3 ||
    typeof parsed[0] !== "string" ||
    typeof parsed[1] !== "string" ||
    !uuidPattern.test(parsed[1]) ||
    Number.isNaN(Date.parse(parsed[0]))
  ) {
    throw new ConnectError("malformed page_token: pass the next_page_token of the previous page", Code.InvalidArgument);
  }
  if ((parsed[2] ?? undefined) !== tag) {
    throw new ConnectError("page_token belongs to a listing with another tag: start again without page_token", Code.InvalidArgument);
  }
  return { createdAt: new Date(parsed[0]), id: parsed[1] };
}
