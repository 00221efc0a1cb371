import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { readFieldMask } from "./field-mask.ts";

function failure(read: () => unknown): ConnectError {
  try {
    read();
  } catch (error) {
    return ConnectError.from(error);
  }
  throw new Error("expected a failure");
}

describe("field masks", () => {
  const changeable = ["title", "body"] as const;

  it("returns the paths named, once each", () => {
    expect(readFieldMask({ $typeName: "google.protobuf.FieldMask", paths: ["body", "title", "body"] }, changeable)).toEqual(["body", "title"]);
  });

  it("refuses an empty or missing mask, naming what can change", () => {
    for (const mask of [undefined, { $typeName: "google.protobuf.FieldMask" as const, paths: [] }]) {
      const error = failure(() => readFieldMask(mask, changeable));
      expect(error.code).toBe(Code.InvalidArgument);
      expect(error.rawMessage).toBe('update_mask is empty: name the fields to change, any of "title", "body"');
    }
  });

  it("refuses a path that cannot change", () => {
    const error = failure(() => readFieldMask({ $typeName: "google.protobuf.FieldMask", paths: ["title", "id"] }, changeable));
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.rawMessage).toBe('update_mask names "id", which cannot change: only "title", "body" can');
  });
});
