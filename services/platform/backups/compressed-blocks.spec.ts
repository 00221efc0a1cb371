import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { buffer } from "node:stream/consumers";
import { finished } from "node:stream/promises";
import { gunzipSync, zstdCompressSync, zstdDecompressSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { compressedBlocks, decompressing, isDecompressionError, type BackupCompression } from "./compressed-blocks.ts";
import { zstdFramesDecompress } from "./zstd-frames.ts";

/** Some text and some noise, in chunks of uneven sizes. */
function chunks(): Buffer[] {
  const text = Buffer.from("a tenant's entry, its title, body and tags; ".repeat(2000));
  const noise = randomBytes(30_000);
  const all = Buffer.concat([text, noise, text]);
  return inPieces(all);
}

/** `bytes` in pieces of uneven sizes, from 1 byte up. */
function inPieces(bytes: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0, size = 1; at < bytes.length; at += size, size = (size * 7) % 9001 + 1) {
    out.push(bytes.subarray(at, at + size));
  }
  return out;
}

/** The error a read that must fail rejects with, as thrown. */
async function failure(read: Promise<unknown>): Promise<Error & { code?: unknown }> {
  return read.then(
    () => {
      throw new Error("expected the read to fail");
    },
    (error: unknown) => error as Error,
  );
}

/** What the command-line tool of `compression` makes of `bytes` (zstd -d, gzip -d). */
const byTool: Record<BackupCompression, (bytes: Buffer) => Buffer> = {
  gzip: (bytes) => execFileSync("gzip", ["-dc"], { input: bytes, maxBuffer: 1 << 26 }),
  zstd: (bytes) => execFileSync("zstd", ["-dc"], { input: bytes, maxBuffer: 1 << 26 }),
};

describe.each(["gzip", "zstd"] as const)("%s in blocks", (compression) => {
  it("compresses a stream as blocks that its command-line tool and a reader of the backup read back whole, in order", async () => {
    const input = chunks();
    const compressed = await buffer(Readable.from(input).pipe(compressedBlocks(compression, 4096)));
    expect(compressed.length).toBeLessThan(Buffer.concat(input).length / 2);
    expect(byTool[compression](compressed).equals(Buffer.concat(input))).toBe(true);
    // Read back in pieces that end anywhere in the blocks.
    const back = await buffer(Readable.from(inPieces(compressed)).pipe(decompressing(compression)));
    expect(back.equals(Buffer.concat(input))).toBe(true);
  });

  it("passes on a block as each fills, not all at the end", async () => {
    const blocks: Buffer[] = [];
    const stream = Readable.from([Buffer.alloc(10_000, "a")]).pipe(compressedBlocks(compression, 4096));
    stream.on("data", (block: Buffer) => blocks.push(block));
    await finished(stream);
    expect(blocks.length).toBe(3);
    const one = compression === "gzip" ? gunzipSync : zstdDecompressSync;
    expect(Buffer.concat(blocks.map((b) => one(b))).equals(Buffer.alloc(10_000, "a"))).toBe(true);
  });

  it("makes an empty file of an empty stream, which reads back empty", async () => {
    const compressed = await buffer(Readable.from([]).pipe(compressedBlocks(compression, 4096)));
    expect(compressed.length).toBeGreaterThan(0);
    const back = await buffer(Readable.from([compressed]).pipe(decompressing(compression)));
    expect(back.length).toBe(0);
  });

  it("fails with a decompression error's code on a file cut short or bytes that are not its kind", async () => {
    const compressed = await buffer(Readable.from(chunks()).pipe(compressedBlocks(compression, 4096)));
    for (const bad of [compressed.subarray(0, compressed.length - 10), randomBytes(5000)]) {
      const error = await failure(buffer(Readable.from(inPieces(bad)).pipe(decompressing(compression))));
      expect(isDecompressionError(error)).toBe(true);
    }
  });
});

describe("zstd frames", () => {
  it("are read on past a frame that ends inside a chunk, skippable frames skipped", async () => {
    const parts = [Buffer.from("first "), Buffer.alloc(300_000, "second "), randomBytes(200_000)];
    const skippable = Buffer.concat([Buffer.from([0x5a, 0x2a, 0x4d, 0x18, 3, 0, 0, 0]), Buffer.from("abc")]);
    const frames = [zstdCompressSync(parts[0]!), skippable, zstdCompressSync(parts[1]!), zstdCompressSync(parts[2]!)];
    const back = await buffer(Readable.from([Buffer.concat(frames)]).pipe(zstdFramesDecompress(1 << 20)));
    expect(back.equals(Buffer.concat(parts))).toBe(true);
  });

  it("refuse a frame that makes more than the most a frame may, as corrupt", async () => {
    const frame = zstdCompressSync(Buffer.alloc(100_000));
    const error = await failure(buffer(Readable.from([frame]).pipe(zstdFramesDecompress(50_000))));
    expect(error.message).toMatch(/holds more than 50000 bytes/);
    expect(isDecompressionError(error)).toBe(true);
  });

  it("refuse a frame longer than the most a frame may be without holding it all", async () => {
    const frame = zstdCompressSync(randomBytes(200_000));
    const stream = zstdFramesDecompress(50_000);
    const error = await failure(buffer(Readable.from(inPieces(frame)).pipe(stream)));
    expect(error.message).toMatch(/longer than 50000 bytes/);
    expect(isDecompressionError(error)).toBe(true);
  });
});
