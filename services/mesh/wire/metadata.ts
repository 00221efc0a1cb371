import { Metadata, type MetadataValue } from "@grpc/grpc-js";

/** Copies gRPC metadata into Fetch API headers (binary values base64-encoded, as Connect does). */
export function headersFromMetadata(metadata: Metadata): Headers {
  const headers = new Headers();
  for (const [key, values] of Object.entries(metadata.toJSON())) {
    for (const value of values) {
      headers.append(key, textOf(value));
    }
  }
  return headers;
}

/** Copies Fetch API headers into gRPC metadata, skipping the transport's own. */
export function metadataFromHeaders(headers: Headers): Metadata {
  const metadata = new Metadata();
  headers.forEach((value, key) => {
    if (reserved.has(key) || key.startsWith("grpc-")) {
      return;
    }
    metadata.add(key, valueOf(key, value));
  });
  return metadata;
}

/**
 * gRPC metadata seen as Fetch API headers, read where it is instead of
 * copied: the request header of a call on the gRPC listener, of which a call
 * reads a few entries at most. Binary values read base64-encoded, as
 * {@link headersFromMetadata} gives them; changes go to the metadata.
 */
export class MetadataHeaders implements Headers {
  readonly #metadata: Metadata;

  constructor(metadata: Metadata) {
    this.#metadata = metadata;
  }

  get(name: string): string | null {
    const values = this.#metadata.get(name.toLowerCase());
    if (values.length === 0) {
      return null;
    }
    return values.length === 1 ? textOf(values[0]!) : values.map(textOf).join(", ");
  }

  has(name: string): boolean {
    return this.#metadata.get(name.toLowerCase()).length > 0;
  }

  getSetCookie(): string[] {
    return this.#metadata.get("set-cookie").map(textOf);
  }

  set(name: string, value: string): void {
    const key = name.toLowerCase();
    this.#metadata.set(key, valueOf(key, value));
  }

  append(name: string, value: string): void {
    const key = name.toLowerCase();
    this.#metadata.add(key, valueOf(key, value));
  }

  delete(name: string): void {
    this.#metadata.remove(name.toLowerCase());
  }

  forEach(callback: (value: string, key: string, parent: Headers) => void, thisArg?: unknown): void {
    for (const [key, value] of this.entries()) {
      callback.call(thisArg, value, key, this);
    }
  }

  /** Names sorted, values of one name joined, as Fetch API headers iterate. */
  *entries(): HeadersIterator<[string, string]> {
    for (const key of Object.keys(this.#metadata.toJSON()).sort()) {
      yield [key, this.get(key)!];
    }
  }

  *keys(): HeadersIterator<string> {
    for (const [key] of this.entries()) {
      yield key;
    }
  }

  *values(): HeadersIterator<string> {
    for (const [, value] of this.entries()) {
      yield value;
    }
  }

  [Symbol.iterator](): HeadersIterator<[string, string]> {
    return this.entries();
  }
}

function textOf(value: MetadataValue): string {
  return typeof value === "string" ? value : Buffer.from(value).toString("base64");
}

function valueOf(key: string, value: string): MetadataValue {
  return key.endsWith("-bin") ? Buffer.from(value, "base64") : value;
}

const reserved = new Set(["content-type", "te", "user-agent", "content-length", "connection", "host"]);
