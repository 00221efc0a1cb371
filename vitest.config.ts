import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["services/**/*.spec.ts", "deploy/**/*.spec.ts", "scripts/**/*.spec.ts"],
    globalSetup: ["services/testing/global-setup.ts"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: "forks",
  },
});
