import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { pageOf, pageSizes, readPage } from "./paging.ts";

const isId = (value: unknown): value is number => Number.isSafeInteger(value);

function codeOf(read: () => unknown): Code | undefined {
  try {
    read();
  } catch (error) {
    return ConnectError.from(error).code;
  }
  return undefined;
}

describe("paging", () => {
  it("gives 0 the default size and caps sizes at the maximum", () => {
    expect(readPage({ pageSize: 0, pageToken: "" }, isId)).toEqual({ size: pageSizes.default, after: undefined });
    expect(readPage({ pageSize: 7, pageToken: "" }, isId).size).toBe(7);
    expect(readPage({ pageSize: 100_000, pageToken: "" }, isId).size).toBe(pageSizes.max);
  });

  it("hands back the cursor of the page before, and no token after the last page", () => {
    const rows = [1, 2, 3, 4, 5];
    const first = pageOf(rows.slice(0, 3), 2, (last) => last * 10);
    expect(first.items).toEqual([1, 2]);
    expect(readPage({ pageSize: 2, pageToken: first.nextPageToken }, isId).after).toBe(20);
    expect(pageOf([4, 5], 2, (last) => last).nextPageToken).toBe("");
    expect(pageOf([], 2, (last: number) => last)).toEqual({ items: [], nextPageToken: "" });
  });

  it("refuses a negative size and a token this listing did not write", () => {
    expect(codeOf(() => readPage({ pageSize: -1, pageToken: "" }, isId))).toBe(Code.InvalidArgument);
    for (const token of ["garbage!", Buffer.from("not json").toString("base64url"), Buffer.from('"a string"').toString("base64url")]) {
      expect(codeOf(() => readPage({ pageSize: 0, pageToken: token }, isId)), token).toBe(Code.InvalidArgument);
    }
  });
});
