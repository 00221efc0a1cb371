import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ClusterService } from "../gen/tenantry/platform/v1/cluster_service_pb.js";
import { operatorCredentialInterceptor } from "../services/mesh/index.ts";
import { startSecondServer, type SecondServer } from "../services/testing/second-server.ts";
import { cliRuns } from "../services/testing/cli-runs.ts";
import { startTestMesh, type TestMesh } from "../services/testing/test-mesh.ts";

let mesh: TestMesh;
let second: SecondServer;
beforeAll(async () => {
  [mesh, second] = await Promise.all([startTestMesh({ services: ["auth", "backend"] }), startSecondServer()]);
  await mesh.client("platform", ClusterService, [operatorCredentialInterceptor(mesh.operatorToken)]).registerCluster(second.registration("second"));
});
afterAll(async () => {
  await mesh?.stop();
  await second?.stop();
});

const { tenantry, tenantryOnTerminal } = cliRuns(() => ({ platformAddress: `127.0.0.1:${mesh.platform.grpcPort}`, operatorToken: mesh.operatorToken }));

const uuid = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}";

describe("tenantry clusters drain", () => {
  it("moves every tenant off with a live bar, lists those left, and goes on from there when run again", async () => {
    const moved = [(await mesh.createTenant()).tenantId, (await mesh.createTenant()).tenantId];
    const asleep = (await mesh.createTenant()).tenantId;
    await mesh.platformClient.suspendTenant({ tenantId: asleep });

    const unknown = await tenantry(["clusters", "drain", "nowhere"]);
    expect([unknown.code, unknown.stderr]).toEqual([3, expect.stringMatching(/^error: NOT_FOUND: cluster "nowhere" is not registered/)]);
    const usage = await tenantry(["clusters", "drain", "default", "--concurrency", "17"]);
    expect(usage.code).toBe(2);
    const mode = await tenantry(["clusters", "drain", "default", "--mode", "fast"]);
    expect(mode.code).toBe(2);

    const run = tenantryOnTerminal(["clusters", "drain", "default", "--concurrency", "2", "--mode", "copy", "--to", "second"]);
    const { code, screen } = await run.done;
    expect(code, screen).toBe(1);
    expect(screen).toMatch(/draining default .* 3\/3 tenants \| 2 moved, 0 moving, 0 failed, 1 left \|/);
    expect(screen).toMatch(/^cluster default is draining: 3 tenants, 2 moved, 0 failed, 1 left\r?$/m);
    expect(screen).toMatch(new RegExp(`^${asleep} +tenant_left +tenant "${asleep}" is suspended: only an ACTIVE tenant can be moved\\r?$`, "m"));
    expect(screen).toMatch(/^error: 1 of 3 tenants were not moved off cluster "default"/m);
    for (const tenantId of moved) {
      expect((await mesh.platformClient.getTenant({ tenantId })).tenant!.cluster).toBe("second");
    }

    await mesh.platformClient.resumeTenant({ tenantId: asleep });
    const again = await tenantry(["--json", "clusters", "drain", "default"]);
    expect(again, again.stderr).toMatchObject({ code: 0 });
    expect(JSON.parse(again.stdout)).toEqual({ cluster: "default", totals: { total: 1, moved: 1, failed: 0, left: 0, remaining: 0, moving: 0 }, notMoved: [] });
    expect(again.stderr).toMatch(new RegExp(`^0/1 ${asleep} move started -> second \\(move ${uuid}\\)$`, "m"));
    expect(again.stderr).toMatch(new RegExp(`^1/1 ${asleep} move succeeded -> second \\(move ${uuid}\\)$`, "m"));

    const done = await tenantry(["clusters", "drain", "default"]);
    expect(done, done.stderr).toMatchObject({ code: 0 });
    expect(done.stderr).toBe("0/0 draining default: 0 tenants on it\n0/0 drained default: 0 moved, 0 failed, 0 left\n");
    expect(done.stdout).toBe("cluster default is draining: 0 tenants, 0 moved, 0 failed, 0 left\n");
  });
});
