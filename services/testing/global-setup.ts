import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { TestProject } from "vitest/node";
import { startEmbeddedDatabase } from "../mesh/index.ts";
import { freePort } from "./free-port.ts";

declare module "vitest" {
  export interface ProvidedContext {
    /** Superuser URL of the `postgres` database on the tests' PostgreSQL server. */
    databaseUrl: string;
  }
}

/**
 * Starts one PostgreSQL server for the whole run, in a temporary directory
 * on a free port, unless TENANTRY_TEST_DATABASE_URL names an existing one.
 */
export default async function setup(project: TestProject) {
  const external = process.env.TENANTRY_TEST_DATABASE_URL;
  if (external !== undefined && external !== "") {
    project.provide("databaseUrl", external);
    return;
  }
  const dir = await mkdtemp(path.join(os.tmpdir(), "tenantry-test-"));
  const database = await startEmbeddedDatabase({ dir, port: await freePort(), ephemeral: true });
  project.provide("databaseUrl", database.url);
  return async () => {
    await database.stop();
    await rm(dir, { recursive: true, force: true });
  };
}
