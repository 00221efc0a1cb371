import { Metadata } from "@grpc/grpc-js";

/** Copies gRPC metadata into Fetch API headers (binary values base64-encoded, as Connect does). */
export function headersFromMetadata(metadata: Metadata): Headers {
  const headers = new Headers();
  for (const [key, values] of Object.entries(metadata.toJSON())) {
    for (const value of values) {
      headers.append(key, typeof value === "string" ? value : Buffer.from(value).toString("base64"));
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
    if (key.endsWith("-bin")) {
      metadata.add(key, Buffer.from(value, "base64"));
    } else {
      metadata.add(key, value);
    }
  });
  return metadata;
}

const reserved = new Set(["content-type", "te", "user-agent", "content-length", "connection", "host"]);
