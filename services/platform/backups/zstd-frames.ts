import { Transform, type TransformCallback } from "node:stream";
import { promisify } from "node:util";
import { zstdDecompress } from "node:zlib";

/** zstd's one-shot decompression on libuv's pool, as gunzip's stream ran: the thread meanwhile sends what came before. */
const zstdDecompressAsync = promisify(zstdDecompress);

/** The magic number of a zstd frame, and of a skippable one (any of 16): RFC 8878 §3.1.1 and §3.1.2. */
const frameMagic = 0xfd2fb528;
const skippableMagic = 0x184d2a50;

/** The code of the errors of bytes that are not zstd frames as written, beside zstd's own (`ZSTD_error_…`). */
const corrupt = "ZSTD_error_corruption_detected";

/** How far the frame being read has been walked: the length of its header and the blocks seen, and its whole length once its last block is. */
interface FrameWalk {
  skippable: boolean;
  length: number;
  checksumBytes: number;
  end?: number;
}

/**
 * A transform that decompresses concatenated zstd frames, as `zstd -d`
 * does: it finds where each frame ends (from its header and its blocks'
 * headers) and decompresses each whole frame by itself, skipping
 * skippable frames. Node's zstd stream (24.x) drops the frames after the
 * first when one ends inside a chunk written to it (nodejs/node#64741).
 * A frame that takes, or would make, more than `maxFrameBytes` fails as
 * corrupt: bytes that were changed must not hold or make a stream's worth
 * of memory (files are authenticated only at their end).
 */
export function zstdFramesDecompress(maxFrameBytes: number): Transform {
  /** The bytes held from the start of the frame being read. */
  let pieces: Buffer[] = [];
  let heldBytes = 0;
  let walk: FrameWalk | undefined;

  /** `n` (up to 4) bytes at `offset` of what is held, little-endian; undefined while not all held. */
  const read = (offset: number, n: number): number | undefined => {
    if (offset + n > heldBytes) {
      return undefined;
    }
    let value = 0;
    for (let i = 0, piece = 0, start = 0; i < n; i++) {
      for (; offset + i >= start + pieces[piece]!.length; piece++) {
        start += pieces[piece]!.length;
      }
      value += pieces[piece]![offset + i - start]! * 2 ** (8 * i);
    }
    return value;
  };

  /** The length of the frame being read, once held far enough to tell. */
  const frameLength = (): number | undefined => {
    if (walk === undefined) {
      const magic = read(0, 4);
      if (magic === undefined) {
        return undefined;
      }
      if (magic >>> 4 === skippableMagic >>> 4) {
        const size = read(4, 4);
        return size === undefined ? undefined : (walk = { skippable: true, length: 8, checksumBytes: 0, end: 8 + size }).end;
      }
      if (magic !== frameMagic) {
        throw zstdError("the data is not zstd frames (unknown frame descriptor)", "ZSTD_error_prefix_unknown");
      }
      const descriptor = read(4, 1);
      if (descriptor === undefined) {
        return undefined;
      }
      const singleSegment = (descriptor >> 5) & 1;
      const contentSizeBytes = [singleSegment, 2, 4, 8][descriptor >> 6]!;
      const dictionaryIdBytes = [0, 1, 2, 4][descriptor & 3]!;
      walk = { skippable: false, length: 5 + (1 - singleSegment) + dictionaryIdBytes + contentSizeBytes, checksumBytes: (descriptor >> 2) & 1 ? 4 : 0 };
    }
    while (walk.end === undefined) {
      const header = read(walk.length, 3);
      if (header === undefined) {
        return undefined;
      }
      const type = (header >> 1) & 3;
      if (type === 3) {
        throw zstdError("a zstd block is of the reserved type", corrupt);
      }
      // A run-length block holds one byte, repeated as many times as its size says.
      walk.length += 3 + (type === 1 ? 1 : header >>> 3);
      if (walk.length > maxFrameBytes) {
        break;
      }
      if (header & 1) {
        walk.end = walk.length + walk.checksumBytes;
      }
    }
    return walk.end ?? walk.length;
  };

  return new Transform({
    transform(chunk: Buffer, _encoding, done: TransformCallback) {
      pieces.push(chunk);
      heldBytes += chunk.length;
      void (async () => {
        for (let length = frameLength(); length !== undefined; length = frameLength()) {
          if (length > maxFrameBytes) {
            throw zstdError(`a zstd frame is longer than ${maxFrameBytes} bytes`, corrupt);
          }
          if (length > heldBytes) {
            break;
          }
          const held = pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces, heldBytes);
          if (!walk!.skippable) {
            this.push(await decompressed(held.subarray(0, length), maxFrameBytes));
          }
          pieces = length < held.length ? [held.subarray(length)] : [];
          heldBytes = held.length - length;
          walk = undefined;
        }
      })().then(() => done(), (error: unknown) => done(error as Error));
    },
    flush(done: TransformCallback) {
      done(heldBytes === 0 ? null : zstdError(`the zstd data ends inside a frame (${heldBytes} bytes of it)`, "Z_BUF_ERROR"));
    },
  });
}

/** One frame's content; more than `maxBytes` of it fails as corrupt. */
async function decompressed(frame: Buffer, maxBytes: number): Promise<Buffer> {
  try {
    return await zstdDecompressAsync(frame, { maxOutputLength: maxBytes });
  } catch (error) {
    throw (error as { code?: string }).code === "ERR_BUFFER_TOO_LARGE" ? zstdError(`a zstd frame holds more than ${maxBytes} bytes`, corrupt) : error;
  }
}

function zstdError(message: string, code: string): Error {
  return Object.assign(new Error(message), { code });
}
