import { describe, expect, it } from "vitest";
import { pageOf, pageSizes } from "../mesh/index.ts";
import { refusal } from "../testing/failure.ts";
import { checkBody, checkEntryId, checkTags, checkTitle, entryCursor, entryLimits, readEntryPage } from "./entry-rules.ts";

/** The page token a listing by `tag` hands on after an entry created at `createdAt`. */
function tokenAfter(createdAt: string, tag?: string): string {
  const rows = [{ createdAt: new Date(createdAt), id: "00000000-0000-4000-8000-000000000001" }, { createdAt: new Date(0), id: "" }];
  return pageOf(rows, 1, (last) => entryCursor(last, tag)).nextPageToken;
}

describe("an entry's fields", () => {
  it("have a title that is not blank, counted in characters, not UTF-16 units", () => {
    expect(checkTitle("first")).toBe("first");
    expect(refusal(() => checkTitle(""))).toMatch(/title cannot be empty/);
    expect(refusal(() => checkTitle(" \t "))).toMatch(/title cannot be empty/);
    expect(checkTitle("x".repeat(entryLimits.titleChars))).toHaveLength(200);
    expect(refusal(() => checkTitle("x".repeat(201)))).toBe("title is 201 characters long; the most is 200");
    expect(checkTitle("😀".repeat(200))).toHaveLength(400);
  });

  it("have a body of at most 65,536 characters, which may be empty", () => {
    expect(checkBody("")).toBe("");
    expect(checkBody("y".repeat(entryLimits.bodyChars))).toHaveLength(65_536);
    expect(refusal(() => checkBody("y".repeat(65_537)))).toMatch(/body is 65537 characters long/);
  });

  it("hold no NUL character in their text", () => {
    expect(refusal(() => checkTitle("a\u0000b"))).toBe("title cannot contain NUL characters");
    expect(refusal(() => checkBody("\u0000"))).toBe("body cannot contain NUL characters");
  });

  it("carry each tag once, in the order first given, at most 20 of them", () => {
    expect(checkTags(["a", "b", "a"])).toEqual(["a", "b"]);
    expect(checkTags([])).toEqual([]);
    const twenty = Array.from({ length: entryLimits.tags }, (_, i) => `t${i}`);
    expect(checkTags([...twenty, ...twenty])).toEqual(twenty);
    expect(refusal(() => checkTags([...twenty, "one-more"]))).toBe("an entry carries at most 20 tags; got 21");
  });

  it("take tags of 1 to 40 lower-case letters, digits, hyphens and underscores", () => {
    expect(checkTags(["a-b_c9", "x".repeat(40)])).toEqual(["a-b_c9", "x".repeat(40)]);
    for (const tag of ["", "Has Space", "UPPER", "dot.ted", "x".repeat(41), "é"]) {
      expect(refusal(() => checkTags([tag])), tag).toMatch(/^malformed tags /);
    }
    expect(refusal(() => checkTags(["no good"], "tag"))).toMatch(/^malformed tag "no good"/);
  });

  it("are found by a UUID id only", () => {
    expect(checkEntryId("00000000-0000-4000-8000-000000000000")).toBe("00000000-0000-4000-8000-000000000000");
    expect(refusal(() => checkEntryId("42"))).toMatch(/entry id/);
  });
});

describe("an entry listing's page", () => {
  it("starts at the newest entry with the default size", () => {
    expect(readEntryPage({ pageSize: 0, pageToken: "" })).toEqual({ size: pageSizes.default, after: undefined, tag: undefined });
    expect(readEntryPage({ pageSize: 5, pageToken: "", tag: "b" })).toEqual({ size: 5, after: undefined, tag: "b" });
  });

  it("goes on after the last entry of the page before: its creation time and id", () => {
    const after = readEntryPage({ pageSize: 5, pageToken: tokenAfter("2026-12-01T10:00:00.123Z") }).after;
    expect(after).toEqual(["2026-12-01T10:00:00.123Z", "00000000-0000-4000-8000-000000000001", null]);
    const tagged = readEntryPage({ pageSize: 5, pageToken: tokenAfter("2026-12-01T10:00:00.123Z", "b"), tag: "b" });
    expect(tagged.after?.[2]).toBe("b");
  });

  it("refuses a token of a listing with another tag, or none", () => {
    const byB = tokenAfter("2026-12-01T10:00:00Z", "b");
    expect(refusal(() => readEntryPage({ pageSize: 5, pageToken: byB }))).toMatch(/another tag/);
    expect(refusal(() => readEntryPage({ pageSize: 5, pageToken: byB, tag: "c" }))).toMatch(/another tag/);
    expect(refusal(() => readEntryPage({ pageSize: 5, pageToken: tokenAfter("2026-12-01T10:00:00Z"), tag: "b" }))).toMatch(/another tag/);
  });

  it("refuses a token it did not write, a malformed tag and a negative size", () => {
    const token = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");
    for (const pageToken of [
      "garbage",
      token(["2026-12-01T10:00:00Z", "00000000-0000-4000-8000-000000000001"]),
      token(["not a time", "00000000-0000-4000-8000-000000000001", null]),
      token(["2026-12-01T10:00:00Z", "42", null]),
      token(["2026-12-01T10:00:00Z", "00000000-0000-4000-8000-000000000001", 7]),
    ]) {
      expect(refusal(() => readEntryPage({ pageSize: 5, pageToken })), pageToken).toMatch(/malformed page_token/);
    }
    expect(refusal(() => readEntryPage({ pageSize: 5, pageToken: "", tag: "Not A Tag" }))).toMatch(/^malformed tag /);
    expect(refusal(() => readEntryPage({ pageSize: -1, pageToken: "" }))).toMatch(/page_size/);
  });
});
