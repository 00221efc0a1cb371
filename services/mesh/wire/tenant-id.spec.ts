import { describe, expect, it } from "vitest";
import { checkTenantId, isTenantId, tenantDatabaseName } from "./tenant-id.ts";

describe("tenant ids", () => {
  it("accepts 3 to 40 lower-case letters, digits and inner hyphens, starting with a letter", () => {
    for (const id of ["acme", "a1b", "acme-corp-2", `a${"b".repeat(38)}c`]) {
      expect(isTenantId(id), id).toBe(true);
    }
    for (const id of ["", "ab", "Acme", "1acme", "acme-", "acme_corp", "acme corp", "acme;drop", `a${"b".repeat(39)}c`, "ac\u00e9"]) {
      expect(isTenantId(id), id).toBe(false);
    }
  });

  it("names the database tenant_<id>", () => {
    expect(tenantDatabaseName("acme-corp")).toBe("tenant_acme_corp");
    expect(() => tenantDatabaseName("x\"; drop")).toThrow(/malformed/);
    expect(() => checkTenantId(undefined)).toThrow(/missing/);
  });
});
