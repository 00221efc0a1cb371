import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";

const version = 1;
const ivLength = 12;
const tagLength = 16;

/**
 * Encrypts credentials at rest with AES-256-GCM. Each value is bound to what
 * it belongs to (`context`, such as "tenant:acme:role"), so a sealed value
 * copied onto another record does not open there.
 */
export class SecretBox {
  readonly #key: Buffer;

  /** `key` is 32 bytes, or their base64/base64url spelling. */
  constructor(key: Buffer | string) {
    const bytes = typeof key === "string" ? Buffer.from(key, "base64url") : key;
    if (bytes.length !== 32) {
      throw new Error("the master key must be 32 bytes (base64 or base64url encoded)");
    }
    this.#key = bytes;
  }

  /** Encrypts `plaintext` for `context`: version, IV, tag and ciphertext in one buffer. */
  seal(plaintext: string, context: string): Buffer {
    const iv = randomBytes(ivLength);
    const cipher = createCipheriv("aes-256-gcm", this.#key, iv);
    cipher.setAAD(Buffer.from(context));
    const body = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()]);
    return Buffer.concat([Buffer.of(version), iv, cipher.getAuthTag(), body]);
  }

  /** Decrypts what `seal` made for the same context; throws if the key, context or bytes differ. */
  open(value: Uint8Array, context: string): string {
    const sealed = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
    if (sealed.length < 1 + ivLength + tagLength || sealed[0] !== version) {
      throw new Error(`sealed value for ${context} is malformed`);
    }
    const iv = sealed.subarray(1, 1 + ivLength);
    const tag = sealed.subarray(1 + ivLength, 1 + ivLength + tagLength);
    const decipher = createDecipheriv("aes-256-gcm", this.#key, iv);
    decipher.setAAD(Buffer.from(context));
    decipher.setAuthTag(tag);
    try {
      return Buffer.concat([decipher.update(sealed.subarray(1 + ivLength + tagLength)), decipher.final()]).toString("utf8");
    } catch {
      throw new Error(`cannot decrypt the secret of ${context}: TENANTRY_MASTER_KEY is not the key it was sealed with`);
    }
  }
}
