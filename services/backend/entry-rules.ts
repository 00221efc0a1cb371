import { Code, ConnectError } from "@connectrpc/connect";
import { checkUuid, isUuid, readPage, type PageRequest } from "../mesh/index.ts";

/** Limits on an entry's fields. */
export const entryLimits = {
  titleChars: 200,
  bodyChars: 65_536,
  tags: 20,
  tagPattern: /^[a-z0-9_-]{1,40}$/,
} as const;

/** An entry id from a request; INVALID_ARGUMENT unless it is a UUID. */
export function checkEntryId(id: string): string {
  return checkUuid(id, "entry id");
}

/** A title: not blank, no NUL, at most `entryLimits.titleChars` characters; INVALID_ARGUMENT otherwise. */
export function checkTitle(title: string): string {
  if (title.trim() === "") {
    throw new ConnectError("title cannot be empty", Code.InvalidArgument);
  }
  return checkText(title, "title", entryLimits.titleChars);
}

/** A body: no NUL, at most `entryLimits.bodyChars` characters; INVALID_ARGUMENT otherwise. */
export function checkBody(body: string): string {
  return checkText(body, "body", entryLimits.bodyChars);
}

/**
 * Tags without repeats, in their first order: at most `entryLimits.tags`,
 * each matching `entryLimits.tagPattern`; INVALID_ARGUMENT otherwise.
 */
export function checkTags(tags: string[], field = "tags"): string[] {
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

/** Where a page of a listing ended: the last entry's creation time and id, and the listing's tag. */
export type EntryCursor = [createdAt: string, id: string, tag: string | null];

/** A listing request, checked: the page size, where the previous page ended, and the tag it lists. */
export interface EntryPageRequest {
  size: number;
  after: EntryCursor | undefined;
  tag: string | undefined;
}

/**
 * Reads a listing's page and tag. A malformed tag or page token is
 * INVALID_ARGUMENT, and so is a token of a listing with another tag.
 */
export function readEntryPage(request: PageRequest & { tag?: string | undefined }): EntryPageRequest {
  const { size, after } = readPage(request, isEntryCursor);
  const tag = request.tag === undefined ? undefined : checkTags([request.tag], "tag")[0];
  if (after !== undefined && (after[2] ?? undefined) !== tag) {
    throw new ConnectError("page_token belongs to a listing with another tag: start again without page_token", Code.InvalidArgument);
  }
  return { size, after, tag };
}

/** The cursor a page whose last entry is `last` hands to the next page of a listing by `tag`. */
export function entryCursor(last: { createdAt: Date; id: string }, tag: string | undefined): EntryCursor {
  return [last.createdAt.toISOString(), last.id, tag ?? null];
}

function isEntryCursor(value: unknown): value is EntryCursor {
  return (
    Array.isArray(value) &&
    value.length === 3 &&
    typeof value[0] === "string" &&
    !Number.isNaN(Date.parse(value[0])) &&
    isUuid(value[1]) &&
    (value[2] === null || typeof value[2] === "string")
  );
}
