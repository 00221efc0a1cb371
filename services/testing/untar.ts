import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { extract } from "tar-stream";

/** The files of a tar archive, by name, in order. */
export async function untar(archive: Buffer | AsyncIterable<Buffer>): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>();
  const reader = extract();
  const read = (async () => {
    for await (const entry of reader) {
      const parts: Buffer[] = [];
      for await (const part of entry) {
        parts.push(part as Buffer);
      }
      files.set(entry.header.name, Buffer.concat(parts));
    }
  })();
  await pipeline(Buffer.isBuffer(archive) ? Readable.from([archive]) : Readable.from(archive), reader);
  await read;
  return files;
}
