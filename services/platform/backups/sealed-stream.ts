import { createCipheriv, createDecipheriv, randomBytes, type DecipherGCM } from "node:crypto";
import { Transform, type TransformCallback } from "node:stream";

const ivLength = 12;
const tagLength = 16;

/**
 * Encrypts a stream with AES-256-GCM under `key`, bound to `context` (its
 * associated data): a random IV, the ciphertext, then the auth tag.
 */
export function sealStream(key: Buffer, context: string): Transform {
  const iv = randomBytes(ivLength);
  const cipher = createCipheriv("aes-256-gcm", key, iv);
  cipher.setAAD(Buffer.from(context));
  let started = false;
  return new Transform({
    transform(chunk: Buffer, _encoding, done: TransformCallback) {
      if (!started) {
        started = true;
        this.push(iv);
      }
      done(null, cipher.update(chunk));
    },
    flush(done: TransformCallback) {
      if (!started) {
        this.push(iv);
      }
      this.push(cipher.final());
      done(null, cipher.getAuthTag());
    },
  });
}

/**
 * Decrypts what {@link sealStream} made with the same key and context. The
 * auth tag is checked at the end: a stream that was changed, cut short or
 * sealed for another context fails with an error naming `what`, after
 * passing on bytes that must then be discarded (a restore loads inside a
 * transaction that the error rolls back).
 */
export function openStream(key: Buffer, context: string, what: string): Transform {
  let head = Buffer.alloc(0);
  let decipher: DecipherGCM | undefined;
  /** The last bytes seen, which may be the tag. */
  let tail: Buffer = Buffer.alloc(0);
  const failed = () => new Error(`${what} failed its integrity check: it was changed, cut short, or belongs to another backup`);
  return new Transform({
    transform(chunk: Buffer, _encoding, done: TransformCallback) {
      if (decipher === undefined) {
        head = Buffer.concat([head, chunk]);
        if (head.length < ivLength) {
          return done();
        }
        decipher = createDecipheriv("aes-256-gcm", key, head.subarray(0, ivLength));
        decipher.setAAD(Buffer.from(context));
        chunk = head.subarray(ivLength);
      }
      if (chunk.length >= tagLength) {
        // The chunk's last bytes are held back (they may be the tag), without copying the rest of it.
        if (tail.length > 0) {
          this.push(decipher.update(tail));
        }
        tail = chunk.subarray(chunk.length - tagLength);
        return done(null, decipher.update(chunk.subarray(0, chunk.length - tagLength)));
      }
      const data = Buffer.concat([tail, chunk]);
      tail = data.subarray(Math.max(0, data.length - tagLength));
      done(null, decipher.update(data.subarray(0, data.length - tail.length)));
    },
    flush(done: TransformCallback) {
      if (decipher === undefined || tail.length < tagLength) {
        return done(failed());
      }
      try {
        decipher.setAuthTag(tail);
        done(null, decipher.final());
      } catch {
        done(failed());
      }
    },
  });
}
