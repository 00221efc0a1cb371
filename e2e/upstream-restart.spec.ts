import { Code, ConnectError } from "@connectrpc/connect";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tenantIdHeader } from "../services/mesh/index.ts";
import { startTestMesh, type TestMesh } from "../services/testing/test-mesh.ts";

describe("Backend while Platform and Auth restart", () => {
  let mesh: TestMesh;
  const tenants: string[] = [];

  beforeAll(async () => {
    mesh = await startTestMesh({
      // Without the change feed a route is trusted for a second only: while
      // Platform is down, Backend serves its tenants from stale routes.
      tenantServiceEnv: { TENANTRY_TENANT_CACHE_TTL_MS: "1000", TENANTRY_PLATFORM_TIMEOUT_MS: "1000" },
    });
    for (let i = 0; i < 2; i++) {
      tenants.push((await mesh.createTenant()).tenantId);
    }
  });

  afterAll(() => mesh?.stop());

  it("keeps serving the tenants it knows, from cached routes and key sets", async () => {
    const headers = (tenantId: string) => ({ headers: { [tenantIdHeader]: tenantId } });
    // Known: Backend has their routes and their key sets (from Auth).
    for (const tenantId of tenants) {
      await mesh.entries.createEntry({ title: "known" }, headers(tenantId));
    }
    let running = true;
    let served = 0;
    const failures: string[] = [];
    const loops = tenants.flatMap((tenantId) =>
      [0, 1].map(async () => {
        while (running) {
          try {
            const { entry } = await mesh.entries.createEntry({ title: "while Platform and Auth restart" }, headers(tenantId));
            await mesh.entries.getEntry({ id: entry!.id }, headers(tenantId));
            served++;
          } catch (error) {
            const { code, rawMessage } = ConnectError.from(error);
            failures.push(`${tenantId}: ${Code[code]} ${rawMessage}`);
          }
        }
      }),
    );
    const serves = async (calls: number) => {
      const from = served;
      await expect.poll(() => served - from, { timeout: 30_000 }).toBeGreaterThanOrEqual(calls);
    };

    await serves(20);
    await Promise.all([mesh.stopPlatform(), mesh.stopAuth()]);
    // Past the routes' time to live: they are stale now, and Platform cannot be asked.
    await sleep(1500);
    await serves(50);
    await Promise.all([mesh.restartPlatform(), mesh.restartAuth()]);
    await serves(50);
    running = false;
    await Promise.all(loops);

    expect(failures).toEqual([]);
  });
});
