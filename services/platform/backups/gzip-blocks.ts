import { Transform, type TransformCallback } from "node:stream";
import { gzipSync } from "node:zlib";

/**
 * A transform that gzips what goes through it (level 1) in blocks of
 * `blockBytes`, passing on each block as a gzip member: consecutive
 * members are one gzip file to every reader (gunzip, `gzip -d`). One
 * block's memory is filled again and again: nothing but the members is
 * left for the garbage collector.
 */
export function gzipBlocks(blockBytes: number): Transform {
  const block = Buffer.allocUnsafeSlow(blockBytes);
  let filled = 0;
  let sent = 0;
  const member = () => {
    sent++;
    const gzipped = gzipSync(block.subarray(0, filled), { level: 1 });
    filled = 0;
    return gzipped;
  };
  return new Transform({
    transform(chunk: Buffer, _encoding, done: TransformCallback) {
      for (let at = 0; at < chunk.length; ) {
        const n = chunk.copy(block, filled, at);
        filled += n;
        at += n;
        if (filled === block.length) {
          this.push(member());
        }
      }
      done();
    },
    flush(done: TransformCallback) {
      // An empty stream is one empty member: a gzip file still.
      done(null, filled > 0 || sent === 0 ? member() : undefined);
    },
  });
}
