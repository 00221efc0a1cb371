import { randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { buffer } from "node:stream/consumers";
import { describe, expect, it } from "vitest";
import { openStream, sealStream } from "./sealed-stream.ts";

const key = randomBytes(32);
const plaintext = randomBytes(100_000);

async function seal(context = "backup:a:1:table-0001.copy.gz"): Promise<Buffer> {
  return buffer(Readable.from([plaintext.subarray(0, 30_000), plaintext.subarray(30_000)]).pipe(sealStream(key, context)));
}

async function open(sealed: Buffer, context = "backup:a:1:table-0001.copy.gz"): Promise<Buffer> {
  // Chunks of odd sizes, so that the IV and the tag straddle them.
  const chunks = [sealed.subarray(0, 5), sealed.subarray(5, 40_003), sealed.subarray(40_003, sealed.length - 7), sealed.subarray(sealed.length - 7)];
  return buffer(Readable.from(chunks).pipe(openStream(key, context, "the file")));
}

describe("sealed streams", () => {
  it("open to what was sealed, whatever the chunks", async () => {
    expect((await open(await seal())).equals(plaintext)).toBe(true);
  });

  it("seal an empty stream to something that opens empty", async () => {
    const sealed = await buffer(Readable.from([]).pipe(sealStream(key, "x")));
    expect(await buffer(Readable.from([sealed]).pipe(openStream(key, "x", "the file")))).toHaveLength(0);
  });

  it("refuse a flipped byte, a cut, and another context", async () => {
    const sealed = await seal();
    const flipped = Buffer.from(sealed);
    flipped[500]! ^= 1;
    await expect(open(flipped)).rejects.toThrow(/the file failed its integrity check/);
    await expect(open(sealed.subarray(0, sealed.length - 100))).rejects.toThrow(/integrity check/);
    await expect(open(sealed.subarray(0, 10))).rejects.toThrow(/integrity check/);
    await expect(open(sealed, "backup:a:1:table-0002.copy.gz")).rejects.toThrow(/integrity check/);
  });
});
