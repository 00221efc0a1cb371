import { Metadata } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { headersFromMetadata, MetadataHeaders } from "./metadata.ts";

function metadata(): Metadata {
  const md = new Metadata();
  md.set("x-tenant-id", "acme");
  md.set("authorization", "Bearer abc");
  md.add("x-forwarded-for", "10.0.0.1");
  md.add("x-forwarded-for", "10.0.0.2");
  md.set("trace-bin", Buffer.from([1, 2, 250]));
  return md;
}

describe("metadata headers", () => {
  it("read as the headers copied from the same metadata read", () => {
    const md = metadata();
    const view = new MetadataHeaders(md);
    const copy = headersFromMetadata(md);
    for (const name of ["x-tenant-id", "X-Tenant-ID", "authorization", "x-forwarded-for", "trace-bin", "traceparent"]) {
      expect(view.get(name)).toBe(copy.get(name));
      expect(view.has(name)).toBe(copy.has(name));
    }
    expect([...view]).toEqual([...copy]);
    expect([...view.keys()]).toEqual([...copy.keys()]);
    expect([...view.values()]).toEqual([...copy.values()]);
    const seen: string[] = [];
    view.forEach((value, key) => seen.push(`${key}=${value}`));
    expect(seen).toEqual([...copy].map(([key, value]) => `${key}=${value}`));
  });

  it("write to the metadata they read", () => {
    const md = metadata();
    const view = new MetadataHeaders(md);
    view.set("X-Tenant-Id", "globex");
    view.append("x-extra", "1");
    view.delete("authorization");
    view.set("trace-bin", Buffer.from([7]).toString("base64"));
    expect(md.get("x-tenant-id")).toEqual(["globex"]);
    expect(md.get("x-extra")).toEqual(["1"]);
    expect(md.get("authorization")).toEqual([]);
    expect(md.get("trace-bin")).toEqual([Buffer.from([7])]);
  });
});
