import { describe, expect, it } from "vitest";
import { namePrefixBounds } from "./name-prefix.ts";

describe("namePrefixBounds", () => {
  it("bounds exactly the names that start with the prefix, in byte order", () => {
    const [low, high] = namePrefixBounds("slot_1a2b_");
    expect([low, high]).toEqual(["slot_1a2b_", "slot_1a2b`"]);
    const within = (name: string) => Buffer.compare(Buffer.from(name), Buffer.from(low)) >= 0 && Buffer.compare(Buffer.from(name), Buffer.from(high)) < 0;
    for (const name of ["slot_1a2b_", "slot_1a2b_x", "slot_1a2b_~~~", "slot_1a2b_ZZ"]) {
      expect({ name, within: within(name) }).toEqual({ name, within: true });
    }
    for (const name of ["slot_1a2b", "slot_1a2b`", "slot_1a2c_", "slot_1a2a_z", "tenant_x"]) {
      expect({ name, within: within(name) }).toEqual({ name, within: false });
    }
  });

  it("refuses a prefix it cannot bound", () => {
    expect(() => namePrefixBounds("")).toThrow(/printable ASCII/);
    expect(() => namePrefixBounds("sl\u00f6t_")).toThrow(/printable ASCII/);
  });
});
