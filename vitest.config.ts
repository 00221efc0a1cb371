import { configDefaults, defineConfig } from "vitest/config";

// Three tiers (see README, "Working on Tenantry"), each a project:
// - unit: `*.spec.ts` beside the code, pure logic; no database, no network.
// - medium: `*.db.spec.ts` beside the code, against real servers (the tests'
//   PostgreSQL, an S3-compatible store): one part or service alone
//   (services/testing/single-service.ts) or the mesh in-process.
// - e2e: e2e/, the mesh from outside: protocols, telemetry, processes, the
//   CLI, crashes, a browser.
// `vitest run` runs them all; `--project <name>` one of them.
const dbSpecs = "**/*.db.spec.ts";
const databaseSetup = ["services/testing/global-setup.ts"];

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: "forks",
    projects: [
      {
        test: {
          name: "unit",
          include: ["services/**/*.spec.ts", "deploy/**/*.spec.ts", "scripts/**/*.spec.ts"],
          exclude: [...configDefaults.exclude, dbSpecs],
          // Pure specs leave nothing behind: one import of the modules per
          // worker, not per file (about 8 s less on 2 cores).
          isolate: false,
        },
      },
      {
        test: {
          name: "medium",
          include: [`services/${dbSpecs}`],
          globalSetup: databaseSetup,
        },
      },
      {
        test: {
          name: "e2e",
          include: ["e2e/**/*.spec.ts"],
          globalSetup: databaseSetup,
        },
      },
    ],
  },
});
