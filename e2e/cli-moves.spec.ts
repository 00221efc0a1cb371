import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ClusterService } from "../gen/tenantry/platform/v1/cluster_service_pb.js";
import { Placement } from "../gen/tenantry/platform/v1/platform_service_pb.js";
import { operatorCredentialInterceptor } from "../services/mesh/index.ts";
import { retried } from "../services/testing/retried.ts";
import { startSecondServer, type SecondServer } from "../services/testing/second-server.ts";
import { cliRuns } from "../services/testing/cli-runs.ts";
import { startTestMesh, type TestMesh } from "../services/testing/test-mesh.ts";

const owner = { email: "owner@example.com", password: "correct horse battery" };
const headers = (tenantId: string) => ({ headers: { "x-tenant-id": tenantId } });
const uuid = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}";

/** Where moves wait (after the step named, until released) when a test asks them to. */
let gate: { step: string; reached: PromiseWithResolvers<void>; release: PromiseWithResolvers<void> } | undefined;
/** Every hold asked for, released once the spec ends whatever happened. */
const holds: (() => void)[] = [];

/**
 * Has the next move wait once `step` is done, before it is recorded (as a
 * crash there would leave it: the move's step is still the one before),
 * until released: `reached` resolves once it waits.
 */
function holdMovesAfter(step: string): { reached: Promise<void>; release: () => void } {
  const held = { step, reached: Promise.withResolvers<void>(), release: Promise.withResolvers<void>() };
  gate = held;
  const release = () => {
    if (gate === held) {
      gate = undefined;
    }
    held.release.resolve();
  };
  holds.push(release);
  return { reached: held.reached.promise, release };
}

let mesh: TestMesh;
let second: SecondServer;
beforeAll(async () => {
  [mesh, second] = await Promise.all([startTestMesh({ services: ["auth", "backend"] }), startSecondServer()]);
  await mesh.restartPlatform(
    {},
    {
      afterMoveStep: async (_moveId: string, step: string) => {
        const held = gate;
        if (held?.step === step) {
          held.reached.resolve();
          await held.release.promise;
        }
      },
    },
  );
  await mesh.client("platform", ClusterService, [operatorCredentialInterceptor(mesh.operatorToken)]).registerCluster(second.registration("second"));
});
afterAll(async () => {
  for (const release of holds) {
    release();
  }
  await mesh?.stop();
  await second?.stop();
});

const { tenantry, tenantryOnTerminal, json } = cliRuns(() => ({ platformAddress: `127.0.0.1:${mesh.platform.grpcPort}`, operatorToken: mesh.operatorToken }));

/** A tenant with its owner and three entries. */
async function populatedTenant(prefix: string): Promise<string> {
  const { tenantId } = await mesh.createTenant({ tenantId: mesh.uniqueTenantId(prefix), owner });
  for (const title of ["first", "second", "third"]) {
    await mesh.entries.createEntry({ title }, headers(tenantId));
  }
  return tenantId;
}

/** The tenant's entry titles as Backend serves them. */
async function titles(tenantId: string): Promise<string[]> {
  const { entries } = await retried(() => mesh.entries.listEntries({ pageSize: 500 }, headers(tenantId)));
  return entries.map((e) => e.title).sort();
}

describe("tenantry tenants move", () => {
  it("moves a tenant to another cluster, printing the finished move; the tenant is served from there with its data", async () => {
    const tenantId = await populatedTenant("cli-move");
    const before = (await json(["tenants", "get", tenantId])).tenant;
    const run = await tenantry(["tenants", "move", tenantId, "--to", "second", "--compare-digests"]);
    expect(run, run.stderr).toMatchObject({ code: 0 });
    const moveId = new RegExp(`^id: +(${uuid})$`, "m").exec(run.stdout)?.[1];
    expect(moveId, run.stdout).toBeDefined();
    expect(run.stdout).toMatch(new RegExp(`^tenant: +${tenantId}$`, "m"));
    expect(run.stdout).toMatch(/^state: +succeeded$/m);
    expect(run.stdout).toMatch(/^step: +close-source$/m);
    expect(run.stdout).toMatch(/^mode: +(online|copy under freeze)$/m);
    expect(run.stdout).toMatch(new RegExp(`^from: +${before.cluster} ${before.database}$`, "m"));
    expect(run.stdout).toMatch(/^to: +second tenant_\S+$/m);
    expect(run.stdout).toMatch(/^compare digests: +yes$/m);
    expect(run.stdout).toMatch(/^write freeze: +\d+\.\d{3}s$/m);
    expect(run.stdout).toMatch(/^source: +closed, dropped after \S+$/m);

    const after = await tenantry(["tenants", "get", tenantId]);
    expect(after, after.stderr).toMatchObject({ code: 0 });
    expect(after.stdout).toMatch(/^cluster: +second$/m);
    expect(after.stdout).toMatch(/^status: +active$/m);
    expect(after.stdout).not.toMatch(/^moving:/m);
    expect(await titles(tenantId)).toEqual(["first", "second", "third"]);
    await retried(() => mesh.entries.createEntry({ title: "fourth" }, headers(tenantId)));
    expect(await titles(tenantId)).toEqual(["first", "fourth", "second", "third"]);

    const got = await tenantry(["moves", "get", moveId!]);
    expect(got, got.stderr).toMatchObject({ code: 0 });
    expect(got.stdout).toMatch(new RegExp(`^id: +${moveId}$`, "m"));
    expect(got.stdout).toMatch(/^state: +succeeded$/m);
    const listed = await tenantry(["moves", "list", tenantId]);
    expect(listed, listed.stderr).toMatchObject({ code: 0 });
    const [head, ...rows] = listed.stdout.trim().split("\n");
    expect(head!.split(/ {2,}/)).toEqual(["ID", "TENANT", "STATE", "STEP", "MODE", "FROM", "TO", "TABLES", "CREATED", "TOOK"]);
    expect(rows).toEqual([expect.stringMatching(new RegExp(`^${moveId} +${tenantId} +succeeded +close-source +(online|copy under freeze) +${before.cluster} +second +`))]);
    const everyTenant = await json(["moves", "list"]);
    expect(everyTenant.moves.map((m: { moveId: string }) => m.moveId)).toContain(moveId);
    expect((await json(["moves", "get", moveId!])).move).toMatchObject({ moveId, tenantId, state: "MOVE_STATE_SUCCEEDED", targetCluster: "second" });
  });

  it("promotes a pooled tenant to a database of its own on its cluster with --placement dedicated", async () => {
    const { tenantId, database: pool } = await mesh.createTenant({ tenantId: mesh.uniqueTenantId("cli-promote"), owner, placement: Placement.POOLED });
    await mesh.entries.createEntry({ title: "first" }, headers(tenantId));
    const { cluster } = (await json(["tenants", "get", tenantId])).tenant;
    const run = await tenantry(["tenants", "move", tenantId, "--placement", "dedicated"]);
    expect(run, run.stderr).toMatchObject({ code: 0 });
    expect(run.stdout).toMatch(/^state: +succeeded$/m);
    expect(run.stdout).toMatch(new RegExp(`^from: +${cluster} ${pool} \\(pooled\\)$`, "m"));
    expect(run.stdout).toMatch(new RegExp(`^to: +${cluster} tenant_\\S+ \\(dedicated\\)$`, "m"));
    const after = await tenantry(["tenants", "get", tenantId]);
    expect(after.stdout).toMatch(/^placement: +dedicated$/m);
    expect(await titles(tenantId)).toEqual(["first"]);
    const nowhere = await tenantry(["tenants", "move", tenantId]);
    expect(nowhere.code).not.toBe(0);
    expect(nowhere.stderr).toMatch(/--to <cluster>, --placement dedicated\|pooled/);
  });

  it("answers --json with the finished move, and moves the tenant back in the mode asked for", async () => {
    const tenantId = await populatedTenant("cli-move-json");
    const { cluster } = (await json(["tenants", "get", tenantId])).tenant;
    const there = await json(["tenants", "move", tenantId, "--to", "second", "--mode", "copy"]);
    expect(there.move).toMatchObject({ tenantId, state: "MOVE_STATE_SUCCEEDED", mode: "MOVE_MODE_COPY_UNDER_FREEZE", sourceCluster: cluster, targetCluster: "second" });
    const back = await json(["tenants", "move", tenantId, "--to", cluster, "--mode", "online"]);
    expect(back.move).toMatchObject({ tenantId, state: "MOVE_STATE_SUCCEEDED", mode: "MOVE_MODE_ONLINE", sourceCluster: "second", targetCluster: cluster });
    expect((await json(["tenants", "get", tenantId])).tenant.cluster).toBe(cluster);
    expect(await titles(tenantId)).toEqual(["first", "second", "third"]);
    const listed = await json(["moves", "list", tenantId]);
    expect(listed.moves.map((m: { moveId: string }) => m.moveId)).toEqual([back.move.moveId, there.move.moveId]);
  });

  it("shows the step, mode, time and move on one line of a terminal while the move runs", async () => {
    const tenantId = await populatedTenant("cli-move-tty");
    // The move waits with create-database its last step recorded.
    const hold = holdMovesAfter("secure-database");
    try {
      const run = tenantryOnTerminal(["tenants", "move", tenantId, "--to", "second"]);
      await hold.reached;
      const running = await run.shown(new RegExp(`moving ${tenantId} to second .* \\d+/\\d+ tables \\| create-database \\| (online|copy under freeze|auto) \\| \\d+s \\| move ${uuid}`));
      expect(running).not.toMatch(/^state:/m);
      hold.release();
      const { code, screen } = await run.done;
      expect(code, screen).toBe(0);
      expect(screen).toMatch(new RegExp(`moving ${tenantId} to second .* \\| close-source, succeeded \\| (online|copy under freeze) \\| \\d+s \\| move ${uuid}`));
      expect(screen).toMatch(/^state: +succeeded\r?$/m);
    } finally {
      hold.release();
    }
  });

  it("says the move goes on, and where to follow it, when the deadline passes first; tenants get and moves get show it under way", async () => {
    const tenantId = await populatedTenant("cli-move-late");
    // The move waits with create-database its last step recorded.
    const hold = holdMovesAfter("secure-database");
    let moveId: string | undefined;
    try {
      const run = await tenantry(["tenants", "move", tenantId, "--to", "second", "--timeout", "3s"]);
      expect(run, run.stderr).toMatchObject({ code: 5, stdout: "" });
      await hold.reached;
      moveId = new RegExp(`the deadline passed before the move ended; the move goes on in Platform: tenantry moves get (${uuid})$`, "m").exec(run.stderr)?.[1];
      expect(moveId, run.stderr).toBeDefined();
      expect(run.stderr).not.toMatch(/^error:/m);
      // Without a terminal, one line per step seen, naming the move.
      expect(run.stderr).toMatch(new RegExp(`^moving ${tenantId} to second: [a-z-]+ \\((online|copy under freeze|auto)\\) \\| move ${moveId}$`, "m"));

      const got = await tenantry(["moves", "get", moveId!]);
      expect(got, got.stderr).toMatchObject({ code: 0 });
      expect(got.stdout).toMatch(/^state: +running$/m);
      expect(got.stdout).toMatch(/^step: +create-database$/m);
      const tenant = await tenantry(["tenants", "get", tenantId]);
      expect(tenant.stdout).toMatch(new RegExp(`^moving: +to second, create-database \\(move ${moveId}\\)$`, "m"));
      const listed = await tenantry(["moves", "list", tenantId]);
      expect(listed.stdout).toMatch(new RegExp(`^${moveId} +${tenantId} +running +create-database `, "m"));

      // A second move of the tenant meanwhile is refused.
      const again = await tenantry(["tenants", "move", tenantId, "--to", "second"]);
      expect(again).toMatchObject({ code: 6 });
      expect(again.stderr).toMatch(/^error: FAILED_PRECONDITION: /m);
    } finally {
      hold.release();
    }
    for (let attempt = 0; ; attempt++) {
      const { move } = await json(["moves", "get", moveId!]);
      if (move.state !== "MOVE_STATE_RUNNING" || attempt > 600) {
        expect(move).toMatchObject({ state: "MOVE_STATE_SUCCEEDED", targetCluster: "second" });
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(await titles(tenantId)).toEqual(["first", "second", "third"]);
  });

  it("exits 3 for an unknown tenant or cluster, 2 for the tenant's own cluster, a missing --to or mode, 6 for a suspended tenant", async () => {
    const tenantId = await populatedTenant("cli-move-bad");
    const { cluster } = (await json(["tenants", "get", tenantId])).tenant;

    const unknownTenant = await tenantry(["tenants", "move", mesh.uniqueTenantId("nobody"), "--to", "second"]);
    expect(unknownTenant).toMatchObject({ code: 3, stdout: "" });
    expect(unknownTenant.stderr).toMatch(/^error: NOT_FOUND: .+/m);
    const unknownCluster = await tenantry(["tenants", "move", tenantId, "--to", "nowhere"]);
    expect(unknownCluster).toMatchObject({ code: 3, stdout: "" });
    expect(unknownCluster.stderr).toMatch(/^error: NOT_FOUND: .*nowhere/m);
    const ownCluster = await tenantry(["tenants", "move", tenantId, "--to", cluster]);
    expect(ownCluster).toMatchObject({ code: 2, stdout: "" });
    expect(ownCluster.stderr).toMatch(/^error: INVALID_ARGUMENT: .+/m);
    const noTarget = await tenantry(["tenants", "move", tenantId]);
    expect(noTarget).toMatchObject({ code: 2, stdout: "" });
    expect(noTarget.stderr).toMatch(/--to/);
    const badMode = await tenantry(["tenants", "move", tenantId, "--to", "second", "--mode", "fast"]);
    expect(badMode).toMatchObject({ code: 2, stdout: "" });
    const asJson = await tenantry(["--json", "tenants", "move", tenantId, "--to", "nowhere"]);
    expect(asJson).toMatchObject({ code: 3, stdout: "" });
    expect(JSON.parse(asJson.stderr)).toMatchObject({ error: { code: "NOT_FOUND" } });

    expect(await tenantry(["tenants", "suspend", tenantId])).toMatchObject({ code: 0 });
    const suspended = await tenantry(["tenants", "move", tenantId, "--to", "second"]);
    expect(suspended).toMatchObject({ code: 6, stdout: "" });
    expect(suspended.stderr).toMatch(/^error: FAILED_PRECONDITION: .+/m);

    expect((await json(["tenants", "get", tenantId])).tenant.cluster).toBe(cluster);
    expect((await json(["moves", "list", tenantId])).moves).toEqual([]);
    expect((await tenantry(["moves", "list", tenantId])).stdout).toBe("no moves\n");
  });

  it("moves get exits 3 for an unknown move and 2 for a malformed id", async () => {
    const unknown = await tenantry(["moves", "get", "00000000-0000-4000-8000-000000000000"]);
    expect(unknown).toMatchObject({ code: 3, stdout: "" });
    expect(unknown.stderr).toMatch(/^error: NOT_FOUND: /m);
    const malformed = await tenantry(["moves", "get", "not-a-uuid"]);
    expect(malformed).toMatchObject({ code: 2, stdout: "" });
    expect(malformed.stderr).toMatch(/^error: INVALID_ARGUMENT: /m);
  });
});
