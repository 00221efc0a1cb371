// What a thread of TableReader runs (see table-reader-worker.ts): reads a
// backup's tables over a connection of its own and posts their sealed bytes,
// or writes them to a file itself.
import { writeSync } from "node:fs";
import { Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { parentPort } from "node:worker_threads";
import pg from "pg";
import { to as copyTo } from "pg-copy-streams";
import { BackupPace } from "./backup-pace.ts";
import { compressedBlocks } from "./compressed-blocks.ts";
import { sealStream } from "./sealed-stream.ts";
import { chunksAhead, connectTo, type ReaderAnswer, type ReaderRequest } from "./table-reader.ts";
import { DigestTap } from "./tenant-catalog.ts";
import { answerEach, handedOver } from "./thread-conversation.ts";

const port = parentPort!;
let client: pg.Client | undefined;
/** Chunks that may be posted before Platform has stored those before them. */
let credit = chunksAhead;
let creditCame: (() => void) | undefined;

function post(answer: ReaderAnswer, transfer: ArrayBuffer[] = []): void {
  port.postMessage(answer, transfer);
}

/** Posts each chunk written, its memory handed over (copied when shared), holding the stream while Platform is behind. */
function toPlatform(): Writable {
  return new Writable({
    write(chunk: Buffer, _encoding, done) {
      const owned = handedOver(chunk);
      post({ type: "data", chunk: owned }, [owned]);
      credit--;
      if (credit > 0) {
        return done();
      }
      creditCame = () => {
        creditCame = undefined;
        done();
      };
    },
  });
}

/**
 * Writes each chunk to the open file `fd` on this thread, synchronously,
 * so that the writing too runs at the thread's priority rather than on
 * libuv's pool. The file is opened and closed by Platform's thread (see
 * `TableReader.readToFile`): a thread stopped in the middle leaves no
 * descriptor behind.
 */
function toFile(fd: number): Writable & { bytesWritten: number } {
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      try {
        for (let at = 0; at < chunk.length; ) {
          at += writeSync(fd, chunk, at);
        }
        sink.bytesWritten += chunk.length;
        done();
      } catch (error) {
        done(error as Error);
      }
    },
  }) as Writable & { bytesWritten: number };
  sink.bytesWritten = 0;
  return sink;
}

async function handle(request: ReaderRequest): Promise<ReaderAnswer | undefined> {
  switch (request.type) {
    case "open": {
      client = await connectTo(request.connection);
      await client.query("begin isolation level repeatable read read only");
      await client.query(`set transaction snapshot ${pg.escapeLiteral(request.snapshot)}`);
      return { type: "opened" };
    }
    case "copy": {
      credit = chunksAhead;
      const source = client!.query(copyTo(request.sql));
      const tap = new DigestTap();
      const key = Buffer.from(request.key.buffer, request.key.byteOffset, request.key.byteLength);
      const sink = request.fd === undefined ? toPlatform() : toFile(request.fd);
      await pipeline(source, BackupPace.of(request.pace).through(), tap, compressedBlocks(request.compression, request.blockBytes), sealStream(key, request.context), sink);
      const storedBytes = "bytesWritten" in sink ? (sink.bytesWritten as number) : undefined;
      return { type: "copied", rows: source.rowCount, sha256: tap.digest(), storedBytes };
    }
    case "more": {
      credit++;
      creditCame?.();
      return undefined;
    }
    case "close": {
      await client?.query("commit");
      await client?.end();
      client = undefined;
      return { type: "closed" };
    }
  }
}

answerEach(port, handle);
