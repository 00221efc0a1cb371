import { describe, expect, it } from "vitest";
import { addressMap, ConfigError, port, positiveInt, readConfig } from "./config.ts";
import { checkTenantId, isTenantId, tenantDatabaseName } from "./tenant-id.ts";

describe("configuration", () => {
  const shape = { TENANTRY_GRPC_PORT: port.default(50053), TENANTRY_DB_MAX_CONNECTIONS: positiveInt.default(40), TENANTRY_SCHEMA_SERVICES: addressMap.optional() };

  it("applies defaults and reads set values", () => {
    expect(readConfig(shape, { TENANTRY_DB_MAX_CONNECTIONS: "7" })).toEqual({ TENANTRY_GRPC_PORT: 50053, TENANTRY_DB_MAX_CONNECTIONS: 7 });
    const map = readConfig(shape, { TENANTRY_SCHEMA_SERVICES: "auth=h:1, backend=h:2" }).TENANTRY_SCHEMA_SERVICES;
    expect([...map!]).toEqual([["auth", "h:1"], ["backend", "h:2"]]);
  });

  it("names every variable at fault and the value it got", () => {
    let error: unknown;
    try {
      readConfig(shape, { TENANTRY_GRPC_PORT: "70000", TENANTRY_DB_MAX_CONNECTIONS: "0", TENANTRY_SCHEMA_SERVICES: "auth" });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const message = (error as Error).message;
    expect(message).toMatch(/TENANTRY_GRPC_PORT: .*\(got "70000"\)/);
    expect(message).toMatch(/TENANTRY_DB_MAX_CONNECTIONS: .*\(got "0"\)/);
    expect(message).toMatch(/TENANTRY_SCHEMA_SERVICES: expected name=host:port/);
  });
});

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
