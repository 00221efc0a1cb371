import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { addressMap, commonEnv, ConfigError, port, positiveInt, readConfig } from "./config.ts";
import { loadSecret } from "./secret-file.ts";

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
  it("never shows a secret's value, nor a URL's password", () => {
    let message = "";
    try {
      readConfig({ ...commonEnv, TENANTRY_DATABASE_URL: z.url({ protocol: /^postgres$/ }) }, { TENANTRY_MESH_KEY: "short-secret", TENANTRY_DATABASE_URL: "http://tenantry:hunter2@db:5432/x" });
    } catch (error) {
      message = (error as Error).message;
    }
    expect(message).toMatch(/^TENANTRY_MESH_KEY: must have at least 32 characters \(got a value of 12 characters, not shown\)$/m);
    expect(message).toMatch(/^TENANTRY_DATABASE_URL: .*\(got "http:\/\/tenantry:\*\*\*@db:5432\/x"\)$/m);
    expect(message).not.toMatch(/short-secret|hunter2/);
  });
});

describe("production posture", () => {
  const shape = { ...commonEnv, TENANTRY_MASTER_KEY: commonEnv.TENANTRY_MESH_KEY };
  const secret = "s".repeat(40);

  function configError(env: Record<string, string>): string {
    try {
      readConfig(shape, env);
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      return (error as Error).message;
    }
    throw new Error("expected a configuration error");
  }

  it("names each missing secret with TENANTRY_ENV=production instead of generating it", async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), "tenantry-config-"));
    try {
      const message = configError({ TENANTRY_ENV: "production", TENANTRY_DATA_DIR: dataDir, TENANTRY_OPERATOR_TOKEN: secret });
      expect(message.split("\n")).toEqual([
        `TENANTRY_MESH_KEY: required with TENANTRY_ENV=production, where nothing is generated (not set, and no ${dataDir}/mesh.key)`,
        `TENANTRY_MASTER_KEY: required with TENANTRY_ENV=production, where nothing is generated (not set, and no ${dataDir}/master.key)`,
      ]);
      await expect(loadSecret({ dataDir, file: "mesh.key", generate: false })).rejects.toThrow(/TENANTRY_MESH_KEY: required/);
      // A secret provisioned as a file (a mounted secret, say) is taken as it is.
      await writeFile(path.join(dataDir, "mesh.key"), `${secret}\n`);
      await writeFile(path.join(dataDir, "master.key"), `${secret}\n`);
      expect(readConfig(shape, { TENANTRY_ENV: "production", TENANTRY_DATA_DIR: dataDir, TENANTRY_OPERATOR_TOKEN: secret }).TENANTRY_ENV).toBe("production");
      expect((await loadSecret({ dataDir, file: "mesh.key", generate: false })).value).toBe(secret);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it("generates what is missing outside production", async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), "tenantry-config-"));
    try {
      expect(readConfig(shape, { TENANTRY_DATA_DIR: dataDir }).TENANTRY_ENV).toBe("development");
      const generated = await loadSecret({ dataDir, file: "mesh.key" });
      expect(generated.value).toMatch(/^[A-Za-z0-9_-]{43}$/);
      expect(generated.path).toBe(path.join(dataDir, "mesh.key"));
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it("refuses any other value of TENANTRY_ENV", () => {
    expect(configError({ TENANTRY_ENV: "prod" })).toMatch(/^TENANTRY_ENV: .*\(got "prod"\)$/);
  });
});
