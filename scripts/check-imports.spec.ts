import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { checkImports } from "./check-imports.ts";

/** A well-formed tree: a main, the mesh's entries and one module in each of a few layers. */
const sound: Record<string, string> = {
  "services/backend/main.ts": `import { runMain } from "../mesh/run-main.ts";\nawait runMain("backend", async () => (await import("./backend.ts")).start());\n`,
  "services/backend/backend.ts": `import { startTenantService, type Logger } from "../mesh/index.ts";\nexport const start = startTenantService;\n`,
  "services/mesh/index.ts": `export { startTenantService } from "./tenant-service.ts";\nexport { type Logger } from "./telemetry/logger.ts";\n`,
  "services/mesh/run-main.ts": `import { createLogger } from "./telemetry/logger.ts";\nimport type { Tenancy } from "./tenancy/tenancy.ts";\nexport const runMain = createLogger;\n`,
  "services/mesh/tenant-service.ts": `import { Tenancy } from "./tenancy/tenancy.ts";\nimport { serve } from "./server/serve.ts";\nexport const startTenantService = () => serve(new Tenancy());\n`,
  "services/mesh/runtime/config.ts": `export const port = 1;\n`,
  "services/mesh/telemetry/logger.ts": `import { port } from "../runtime/config.ts";\nexport const createLogger = () => port;\nexport type Logger = number;\n`,
  "services/mesh/tenancy/tenancy.ts": `import pg from "pg";\nimport type { Logger } from "../telemetry/logger.ts";\nimport { route } from "./platform-routes.ts";\nexport class Tenancy {}\n`,
  "services/mesh/tenancy/platform-routes.ts": `import { PlatformService } from "../../../gen/tenantry/platform/v1/platform_service_pb.js";\nexport const route = PlatformService;\n`,
  "services/mesh/server/serve.ts": `import type { Tenancy } from "../tenancy/tenancy.ts";\nexport const serve = (t: Tenancy) => t;\n`,
  "services/mesh/server/serve.spec.ts": `import { startTenantService } from "../index.ts";\nimport { EntryService } from "../../../gen/tenantry/auth/v1/auth_service_pb.js";\n`,
};

let root: string | undefined;
afterEach(async () => {
  if (root !== undefined) {
    await rm(root, { recursive: true, force: true });
  }
});

/** Writes the sound tree with `changes` applied (null removes a file) and checks it. */
async function check(changes: Record<string, string | null> = {}): Promise<string[]> {
  root = await mkdtemp(path.join(os.tmpdir(), "check-imports-"));
  for (const [file, source] of Object.entries({ ...sound, ...changes })) {
    if (source !== null) {
      await mkdir(path.dirname(path.join(root, file)), { recursive: true });
      await writeFile(path.join(root, file), source);
    }
  }
  return checkImports(root);
}

describe("the import check", () => {
  it("passes a tree that keeps the rules, type-only imports and specs included", async () => {
    expect(await check()).toEqual([]);
  });

  it("names code outside services/mesh that imports a mesh module other than its entries", async () => {
    const problems = await check({ "bench/run.ts": `import {\n  createGrpcJsTransport,\n} from "../services/mesh/client/grpc-transport.ts";\n` });
    expect(problems).toEqual([
      `bench/run.ts: imports "../services/mesh/client/grpc-transport.ts": code outside services/mesh imports it only through services/mesh/index.ts (or services/mesh/run-main.ts, a main's entry)`,
    ]);
  });

  it("names a layer that imports a layer above it, or a top-level file", async () => {
    const problems = await check({
      "services/mesh/telemetry/logger.ts": `import { serve } from "../server/serve.ts";\nimport { runMain } from "../run-main.ts";\nexport const createLogger = 1;\n`,
    });
    expect(problems).toContain(
      `services/mesh/telemetry/logger.ts: imports "../server/serve.ts": telemetry/ may import only runtime/, telemetry/, not server/ (layers, lowest first: runtime < telemetry < wire < access < tenancy < client < server < top-level files)`,
    );
    expect(problems).toContain(
      `services/mesh/telemetry/logger.ts: imports "../run-main.ts": telemetry/ may import only runtime/, telemetry/, not the top-level run-main.ts (layers, lowest first: runtime < telemetry < wire < access < tenancy < client < server < top-level files)`,
    );
  });

  it("names an import circle by the files around it", async () => {
    const problems = await check({
      "services/mesh/runtime/config.ts": `import { secret } from "./secret-file.ts";\nexport const port = 1;\n`,
      "services/mesh/runtime/secret-file.ts": `import type { port } from "./config.ts";\nexport const secret = 1;\n`,
    });
    expect(problems).toEqual([
      "services/mesh/runtime/secret-file.ts: imports runtime/config.ts, which closes an import circle: runtime/config.ts → runtime/secret-file.ts → runtime/config.ts",
    ]);
  });

  it("names what run-main.ts loads that imports pg or MikroORM, and through which modules", async () => {
    const problems = await check({
      "services/mesh/telemetry/logger.ts": `import { MikroORM } from "@mikro-orm/postgresql";\nexport const createLogger = 1;\nexport type Logger = number;\n`,
    });
    expect(problems).toEqual([
      `services/mesh/telemetry/logger.ts: imports "@mikro-orm/postgresql", loaded by run-main.ts → telemetry/logger.ts: a main imports run-main.ts before telemetry starts, and pg loaded then gets no SQL spans`,
    ]);
  });

  it("names a module of services/mesh outside the layer folders and the top-level files", async () => {
    const problems = await check({ "services/mesh/migration-table.ts": `export const table = "mikro_orm_migrations";\n` });
    expect(problems).toEqual([
      "services/mesh/migration-table.ts: out of place: a module of services/mesh sits in one of runtime/, telemetry/, wire/, access/, tenancy/, client/, server/, or is one of the top-level index.ts, run-main.ts, tenant-service.ts",
    ]);
  });

  it("names a mesh module other than the contract's one file that imports Platform's or Auth's contract", async () => {
    const problems = await check({
      "services/mesh/server/serve.ts": `import type { AuthService } from "../../../gen/tenantry/auth/v1/auth_service_pb.js";\nexport const serve = 1;\n`,
    });
    expect(problems).toEqual([
      `services/mesh/server/serve.ts: imports "../../../gen/tenantry/auth/v1/auth_service_pb.js": in services/mesh only services/mesh/access/auth-key-sets.ts imports gen/tenantry/auth/, so that moving those calls to another contract changes one file`,
    ]);
  });
});
