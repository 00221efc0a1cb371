import { Code, ConnectError } from "@connectrpc/connect";
import { OptimisticLockError, type EntityManager, type FilterQuery } from "@mikro-orm/postgresql";
import { randomUUID } from "node:crypto";
import { checkUuid, isUuid, pageOf, readPage } from "../mesh/index.ts";
import { Entry } from "./entities/entry.ts";

/** Limits on an entry's fields. */
export const entryLimits = {
  titleChars: 200,
  bodyChars: 65_536,
  tags: 20,
  tagPattern: /^[a-z0-9_-]{1,40}$/,
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
  const { size, after } = readPage(request, isPageCursor);
  const tag = request.tag === undefined ? undefined : checkTags([request.tag], "tag")[0];
  if (after !== undefined && (after[2] ?? undefined) !== tag) {
    throw new ConnectError("page_token belongs to a listing with another tag: start again without page_token", Code.InvalidArgument);
  }
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
  const page = pageOf(rows, size, (last): PageCursor => [last.createdAt.toISOString(), last.id, tag ?? null]);
  return { entries: page.items, nextPageToken: page.nextPageToken };
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

function checkId(id: string): string {
  return checkUuid(id, "entry id");
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

/** Where a page of a listing ended: the last entry's creation time and id, and the listing's tag. */
type PageCursor = [createdAt: string, id: string, tag: string | null];

function isPageCursor(value: unknown): value is PageCursor {
  return (
    Array.isArray(value) &&
    value.length === 3 &&
    typeof value[0] === "string" &&
    !Number.isNaN(Date.parse(value[0])) &&
    isUuid(value[1]) &&
    (value[2] === null || typeof value[2] === "string")
  );
}
