import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { checkUuid, isUuid } from "./uuid.ts";

describe("uuids", () => {
  it("accepts UUIDs in any letter case and returns them in lower case", () => {
    expect(isUuid("7C9E6679-7425-40DE-944B-E07FC1F90AE7")).toBe(true);
    expect(checkUuid("7C9E6679-7425-40DE-944B-E07FC1F90AE7", "entry id")).toBe("7c9e6679-7425-40de-944b-e07fc1f90ae7");
  });

  it("refuses anything else with INVALID_ARGUMENT naming the field", () => {
    for (const value of ["", "42", "7c9e6679742540de944be07fc1f90ae7", "7c9e6679-7425-40de-944b-e07fc1f90ae7 ", "x".repeat(100)]) {
      expect(isUuid(value), value).toBe(false);
      let error: ConnectError | undefined;
      try {
        checkUuid(value, "entry id");
      } catch (e) {
        error = ConnectError.from(e);
      }
      expect(error?.code, value).toBe(Code.InvalidArgument);
      expect(error?.rawMessage, value).toMatch(/^malformed entry id ".{0,60}": expected a UUID$/);
    }
    expect(isUuid(42)).toBe(false);
  });
});
