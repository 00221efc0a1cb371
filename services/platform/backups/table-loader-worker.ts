// A thread of TableLoader: loads a restore's tables over a connection of
// its own from the file bytes Platform posts.
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { parentPort } from "node:worker_threads";
import type pg from "pg";
import { from as copyFrom } from "pg-copy-streams";
import { decompressing } from "./compressed-blocks.ts";
import { openStream } from "./sealed-stream.ts";
import type { LoaderAnswer, LoaderRequest } from "./table-loader.ts";
import { connectTo } from "./table-reader.ts";
import { DigestTap } from "./tenant-catalog.ts";
import { answerEach, handedOver } from "./thread-conversation.ts";

const port = parentPort!;
let client: pg.Client | undefined;
/** The file of the table being loaded. */
let incoming: Readable | undefined;
/** Chunks taken and not yet told to Platform: it is told once they are read. */
let owed = 0;

function post(answer: LoaderAnswer): void {
  port.postMessage(answer);
}

async function load(request: Extract<LoaderRequest, { type: "load" }>): Promise<LoaderAnswer> {
  owed = 0;
  const file = new Readable({
    read() {
      for (; owed > 0; owed--) {
        post({ type: "more" });
      }
    },
  });
  incoming = file;
  const key = Buffer.from(request.key.buffer, request.key.byteOffset, request.key.byteLength);
  await client!.query("begin");
  try {
    // Frozen as loaded (emptied in the same transaction): no reader after it has hint bits to write, ANALYZE first.
    await client!.query(request.truncate);
    const sink = client!.query(copyFrom(request.sql));
    const tap = new DigestTap();
    await pipeline(file, openStream(key, request.context, request.what), decompressing(request.compression), tap, sink);
    await client!.query("commit");
    return { type: "loaded", rows: sink.rowCount, sha256: tap.digest() };
  } catch (error) {
    await client!.query("rollback").catch(() => undefined);
    throw error;
  } finally {
    incoming = undefined;
  }
}

async function handle(request: LoaderRequest): Promise<LoaderAnswer | undefined> {
  switch (request.type) {
    case "open":
      client = await connectTo(request.connection);
      await client.query("set synchronous_commit = off");
      return { type: "opened" };
    case "load":
      return load(request);
    case "chunk":
      if (incoming?.push(Buffer.from(request.chunk)) === true) {
        post({ type: "more" });
      } else {
        owed++;
      }
      return undefined;
    case "end":
      incoming?.push(null);
      return undefined;
    case "abort":
      incoming?.destroy(new Error(request.message));
      return undefined;
    case "close":
      await client?.end();
      client = undefined;
      return { type: "closed" };
  }
}

answerEach(port, handle);
