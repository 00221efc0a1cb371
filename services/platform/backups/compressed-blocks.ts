import { Transform, type TransformCallback } from "node:stream";
import { constants, createGunzip, gzipSync, zstdCompressSync } from "node:zlib";
import { zstdFramesDecompress } from "./zstd-frames.ts";

/**
 * How a backup's table files are compressed: zstd (format 1.1 on), or
 * gzip (format 1.0, and the backups of format 1.x that record none).
 */
export type BackupCompression = "gzip" | "zstd";

/** The ending of a table file's name, by its compression. */
export const compressedFileEnding: Record<BackupCompression, string> = { gzip: ".gz", zstd: ".zst" };

/** Raw bytes per block (a gzip member, a zstd frame) that {@link compressedBlocks} is given by backups, and the most a reader takes in one zstd frame. */
export const compressedBlockBytes = 1024 * 1024;

/** Each block compressed by itself, at level 1: the fastest of both, a backup's CPU being taken from the tenants served. */
const compressBlock: Record<BackupCompression, (block: Buffer) => Buffer> = {
  gzip: (block) => gzipSync(block, { level: 1 }),
  zstd: (block) => zstdCompressSync(block, { params: { [constants.ZSTD_c_compressionLevel]: 1 } }),
};

/**
 * A transform that compresses what goes through it (level 1) in blocks of
 * `blockBytes`, passing on each block as a gzip member or a zstd frame:
 * consecutive members are one gzip file to every reader (gunzip,
 * `gzip -d`), consecutive frames one zstd file (`zstd -d`). Compressed on
 * the calling thread, at its priority (not on libuv's pool). One block's
 * memory is filled again and again: nothing but the compressed blocks is
 * left for the garbage collector.
 */
export function compressedBlocks(compression: BackupCompression, blockBytes: number): Transform {
  const compress = compressBlock[compression];
  const block = Buffer.allocUnsafeSlow(blockBytes);
  let filled = 0;
  let sent = 0;
  const compressed = () => {
    sent++;
    const bytes = compress(block.subarray(0, filled));
    filled = 0;
    return bytes;
  };
  return new Transform({
    transform(chunk: Buffer, _encoding, done: TransformCallback) {
      for (let at = 0; at < chunk.length; ) {
        const n = chunk.copy(block, filled, at);
        filled += n;
        at += n;
        if (filled === block.length) {
          this.push(compressed());
        }
      }
      done();
    },
    flush(done: TransformCallback) {
      // An empty stream is one empty member or frame: a gzip or zstd file still.
      done(null, filled > 0 || sent === 0 ? compressed() : undefined);
    },
  });
}

/** The size of the chunks gunzip makes: four times zlib's default, a quarter of the hand-offs to its thread and of the buffers. */
const gunzipChunkBytes = 64 * 1024;

/**
 * A transform that decompresses a table file of `compression`. Bytes that
 * are not what was compressed fail with a zlib error's code (`Z_…`) or a
 * zstd error's (`ZSTD_error_…`; `Z_BUF_ERROR` for a file cut short).
 */
export function decompressing(compression: BackupCompression): Transform {
  // A frame of a backup holds one block: eight times that is only bytes that were changed.
  return compression === "gzip" ? createGunzip({ chunkSize: gunzipChunkBytes }) : zstdFramesDecompress(8 * compressedBlockBytes);
}

/** Whether `error` is one of {@link decompressing}'s on bytes that are not a compressed file. */
export function isDecompressionError(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  return typeof code === "string" && (code.startsWith("Z_") || code.startsWith("ZSTD_error_"));
}
