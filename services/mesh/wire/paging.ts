import { Code, ConnectError } from "@connectrpc/connect";

/** Page sizes every List method shares: 0 asks for the default; more than the maximum gets the maximum. */
export const pageSizes = { default: 50, max: 500 } as const;

/** What a List request says about its page. */
export interface PageRequest {
  pageSize: number;
  pageToken: string;
}

/** A List request's page, checked: how many rows, and the cursor where the previous page ended. */
export interface Page<C> {
  size: number;
  /** The previous page's last row, as its token carried it; undefined for the first page. */
  after: C | undefined;
}

/**
 * Reads a List request's page size and token. A page token is the
 * base64url JSON of a cursor; `isCursor` says whether a decoded value is one
 * this listing wrote. A negative size or a token that is not one of this
 * listing's is INVALID_ARGUMENT.
 */
export function readPage<C>(request: PageRequest, isCursor: (value: unknown) => value is C): Page<C> {
  if (request.pageSize < 0) {
    throw new ConnectError("page_size cannot be negative", Code.InvalidArgument);
  }
  const size = Math.min(request.pageSize || pageSizes.default, pageSizes.max);
  if (request.pageToken === "") {
    return { size, after: undefined };
  }
  let after: unknown;
  try {
    after = JSON.parse(Buffer.from(request.pageToken, "base64url").toString("utf8"));
  } catch {
    after = undefined;
  }
  if (after === undefined || !isCursor(after)) {
    throw new ConnectError("malformed page_token: pass the next_page_token of the previous page", Code.InvalidArgument);
  }
  return { size, after };
}

/**
 * Cuts the rows of a query that asked for `size + 1` into the page and the
 * next page's token: empty when this page is the last.
 */
export function pageOf<R, C>(rows: R[], size: number, cursorOf: (last: R) => C): { items: R[]; nextPageToken: string } {
  const items = rows.slice(0, size);
  const last = items.at(-1);
  return {
    items,
    nextPageToken: rows.length > size && last !== undefined ? Buffer.from(JSON.stringify(cursorOf(last))).toString("base64url") : "",
  };
}
