import { randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { buffer } from "node:stream/consumers";
import { finished } from "node:stream/promises";
import { createGunzip, gunzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { gzipBlocks } from "./gzip-blocks.ts";

/** Some text and some noise, in chunks of uneven sizes. */
function chunks(): Buffer[] {
  const text = Buffer.from("a tenant's entry, its title, body and tags; ".repeat(2000));
  const noise = randomBytes(30_000);
  const all = Buffer.concat([text, noise, text]);
  const out: Buffer[] = [];
  for (let at = 0, size = 1; at < all.length; at += size, size = (size * 7) % 9001 + 1) {
    out.push(all.subarray(at, at + size));
  }
  return out;
}

describe("gzip in blocks", () => {
  it("gzips a stream as members one gunzip reads back whole, in order", async () => {
    const input = chunks();
    const gzipped = await buffer(Readable.from(input).pipe(gzipBlocks(4096)));
    expect(gunzipSync(gzipped).equals(Buffer.concat(input))).toBe(true);
    expect(gzipped.length).toBeLessThan(Buffer.concat(input).length / 2);
  });

  it("passes on a member as each block fills, not all at the end", async () => {
    const members: Buffer[] = [];
    const stream = Readable.from([Buffer.alloc(10_000, "a")]).pipe(gzipBlocks(4096));
    stream.on("data", (member: Buffer) => members.push(member));
    await finished(stream);
    expect(members.length).toBe(3);
    expect(Buffer.concat(members.map((m) => gunzipSync(m))).equals(Buffer.alloc(10_000, "a"))).toBe(true);
  });

  it("makes an empty gzip of an empty stream", async () => {
    const gzipped = await buffer(Readable.from([]).pipe(gzipBlocks(4096)));
    const back = await buffer(Readable.from([gzipped]).pipe(createGunzip()));
    expect(back.length).toBe(0);
  });
});
