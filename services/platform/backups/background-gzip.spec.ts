import { randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { Readable } from "node:stream";
import { buffer } from "node:stream/consumers";
import { pipeline } from "node:stream/promises";
import { createGunzip, gunzipSync } from "node:zlib";
import { afterAll, describe, expect, it } from "vitest";
import { BackgroundGzip } from "./background-gzip.ts";

const gzip = new BackgroundGzip({ threads: 2, blockBytes: 4096 });

afterAll(() => gzip.close());

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

describe("background gzip", () => {
  it("gzips a stream as members one gunzip reads back whole, in order", async () => {
    const input = chunks();
    const gzipped = await buffer(Readable.from(input).pipe(gzip.stream()));
    expect(gunzipSync(gzipped).equals(Buffer.concat(input))).toBe(true);
    expect(gzipped.length).toBeLessThan(Buffer.concat(input).length / 2);
  });

  it("serves streams side by side", async () => {
    const inputs = [chunks(), chunks(), chunks()];
    const outputs = await Promise.all(inputs.map((input) => buffer(Readable.from(input).pipe(gzip.stream()))));
    outputs.forEach((output, i) => expect(gunzipSync(output).equals(Buffer.concat(inputs[i]!))).toBe(true));
  });

  it("makes an empty gzip of an empty stream", async () => {
    const gzipped = await buffer(Readable.from([]).pipe(gzip.stream()));
    const back = await buffer(Readable.from([gzipped]).pipe(createGunzip()));
    expect(back.length).toBe(0);
  });

  it("compresses on threads of lower priority than the process's where the system has them (Linux)", async () => {
    await buffer(Readable.from(chunks()).pipe(gzip.stream()));
    if (existsSync("/proc/thread-self")) {
      const nice = (stat: string) => Number(stat.split(") ")[1]!.split(" ")[16]);
      const threads = readdirSync("/proc/self/task").map((tid) => nice(readFileSync(`/proc/self/task/${tid}/stat`, "utf8")));
      expect(threads.filter((n) => n === 19).length).toBe(2);
      expect(nice(readFileSync("/proc/self/stat", "utf8"))).toBe(0);
    }
  });

  it("fails what it is given once closed, saying why", async () => {
    const closed = new BackgroundGzip({ threads: 1 });
    await closed.close();
    await expect(pipeline(Readable.from([Buffer.from("rows")]), closed.stream(), async function* (source) {
      for await (const _ of source) {
        // drained
      }
    })).rejects.toThrow(/Platform is shutting down/);
  });
});
