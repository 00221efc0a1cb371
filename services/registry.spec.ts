import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { readConfig, tenantServiceEnv } from "./mesh/index.ts";
import { readPlatformConfig } from "./platform/config.ts";
import { portVariables, registeredService, registry, schemaServicesSetting } from "./registry.ts";

const root = fileURLToPath(new URL("..", import.meta.url));

describe("service registry", () => {
  it("names each service once, in lower case, by its folder", () => {
    const names = registry.map((s) => s.name);
    expect(new Set(names).size).toBe(names.length);
    for (const service of registry) {
      expect(service.name).toMatch(/^[a-z][a-z0-9-]*$/);
      expect(service.main).toBe(`services/${service.name}/main.ts`);
    }
  });

  it("gives every service a main.ts, and a start.ts beside it that exports its start", async () => {
    for (const service of registry) {
      expect(existsSync(path.join(root, service.main)), service.main).toBe(true);
      const module = (await import(path.join(root, path.dirname(service.main), "start.ts"))) as { start?: unknown };
      expect(typeof module.start, `${service.name}'s start.ts`).toBe("function");
    }
  });

  it("gives no two services the same port", () => {
    const ports = registry.flatMap((s) => [s.grpcPort, s.httpPort]);
    expect(ports.filter((p, i) => ports.indexOf(p) !== i)).toEqual([]);
  });

  it("names a service's schema after the service, as the mesh names it, and gives Platform none", () => {
    for (const service of registry) {
      expect([undefined, service.name]).toContain(service.schema);
    }
    expect(registeredService("platform").schema).toBeUndefined();
  });

  it("agrees with where the mesh finds Platform and Auth unless configured", () => {
    const config = readConfig(tenantServiceEnv, {});
    expect(config.TENANTRY_PLATFORM_ADDRESS).toBe(`127.0.0.1:${registeredService("platform").grpcPort}`);
    expect(config.TENANTRY_AUTH_ADDRESS).toBe(`127.0.0.1:${registeredService("auth").grpcPort}`);
  });

  it("is where Platform's default TENANTRY_SCHEMA_SERVICES comes from: every service that owns a schema, at its port", () => {
    const config = readPlatformConfig({ TENANTRY_DATABASE_URL: "postgres://postgres@127.0.0.1:5432/tenantry_platform" });
    const owners = registry.filter((s) => s.schema !== undefined);
    expect([...config.TENANTRY_SCHEMA_SERVICES]).toEqual(owners.map((s) => [s.name, `127.0.0.1:${s.grpcPort}`]));
    expect(config.TENANTRY_SCHEMA_SERVICES.get("auth")).toBe("127.0.0.1:50052");
    expect(config.TENANTRY_SCHEMA_SERVICES.has("platform")).toBe(false);
  });

  it("throws naming the registered services when asked for another", () => {
    expect(() => registeredService("no-such-service")).toThrow(`no service "no-such-service" in services/registry.ts (registered: ${registry.map((s) => s.name).join(", ")})`);
  });

  it("says npm start's port variables and Platform's schema services", () => {
    expect(portVariables({ name: "auth" })).toEqual({ grpc: "TENANTRY_AUTH_GRPC_PORT", http: "TENANTRY_AUTH_HTTP_PORT" });
    expect(portVariables({ name: "audit-log" }).grpc).toBe("TENANTRY_AUDIT_LOG_GRPC_PORT");
    const services = [{ name: "platform" }, { name: "auth", schema: "auth" }, { name: "audit-log", schema: "audit-log" }];
    expect(schemaServicesSetting(services, (s) => `${s.name}:1`)).toBe("auth=auth:1,audit-log=audit-log:1");
  });
});
