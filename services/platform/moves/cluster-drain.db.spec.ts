import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ClusterService, ClusterState } from "../../../gen/tenantry/platform/v1/cluster_service_pb.js";
import { MoveMode, MoveState } from "../../../gen/tenantry/platform/v1/move_pb.js";
import { DrainEvent, MoveService, type DrainClusterRequestSchema, type DrainClusterResponse } from "../../../gen/tenantry/platform/v1/move_service_pb.js";
import { operatorCredentialInterceptor } from "../../mesh/index.ts";
import { failure } from "../../testing/failure.ts";
import { retried } from "../../testing/retried.ts";
import { startSecondServer, type SecondServer } from "../../testing/second-server.ts";
import { startTestMesh, type TestMesh } from "../../testing/test-mesh.ts";

const owner = { email: "owner@example.com", password: "correct horse battery" };
const headers = (tenantId: string) => ({ headers: { "x-tenant-id": tenantId } });

/** Where moves wait (after the step named, until released) when a spec asks them to. */
let gate: { step: string; reached: PromiseWithResolvers<void>; release: PromiseWithResolvers<void> } | undefined;

/** Has the next moves wait after `step` until released: `reached` resolves once the first waits. */
function holdMovesAfter(step: string): { reached: Promise<void>; release: () => void } {
  const held = { step, reached: Promise.withResolvers<void>(), release: Promise.withResolvers<void>() };
  gate = held;
  return {
    reached: held.reached.promise,
    release: () => {
      gate = undefined;
      held.release.resolve();
    },
  };
}

let mesh: TestMesh;
let second: SecondServer;
let moves: Client<typeof MoveService>;
let clusters: Client<typeof ClusterService>;

beforeAll(async () => {
  [mesh, second] = await Promise.all([startTestMesh({ services: ["auth", "backend"] }), startSecondServer()]);
  await mesh.restartPlatform({}, {
    afterMoveStep: async (_moveId: string, step: string) => {
      const held = gate;
      if (held?.step === step) {
        held.reached.resolve();
        await held.release.promise;
      }
    },
  });
  const operator = [operatorCredentialInterceptor(mesh.operatorToken)];
  moves = mesh.client("platform", MoveService, operator);
  clusters = mesh.client("platform", ClusterService, operator);
  await clusters.registerCluster(second.registration("second"));
  await clusters.registerCluster(second.registration("closed", { state: ClusterState.DRAINING }));
});
afterAll(async () => {
  gate?.release.resolve();
  await mesh?.stop();
  await second?.stop();
});

/** A tenant with its owner and entries, on cluster "default". */
async function populatedTenant(prefix: string): Promise<string> {
  const tenant = await mesh.createTenant({ tenantId: mesh.uniqueTenantId(prefix), owner });
  for (const title of ["first", "second"]) {
    await mesh.entries.createEntry({ title: `${title} of ${tenant.tenantId}` }, headers(tenant.tenantId));
  }
  expect((await mesh.platformClient.getTenant({ tenantId: tenant.tenantId })).tenant!.cluster).toBe("default");
  return tenant.tenantId;
}

/** Runs a drain to its end: its events, and the error it ended with (undefined for OK). */
async function drain(request: MessageInitShape<typeof DrainClusterRequestSchema>): Promise<{ events: DrainClusterResponse[]; error: ConnectError | undefined }> {
  const events: DrainClusterResponse[] = [];
  try {
    for await (const event of moves.drainCluster(request)) {
      events.push(event);
    }
    return { events, error: undefined };
  } catch (error) {
    return { events, error: ConnectError.from(error) };
  }
}

const stateOf = async (name: string) => (await clusters.listClusters({})).clusters.find((c) => c.name === name)?.state;
const kinds = (events: DrainClusterResponse[], kind: DrainEvent) => events.filter((e) => e.event === kind);

describe("draining a cluster", () => {
  let tenants: string[];

  it("refuses hostile requests before changing anything", async () => {
    tenants = [await populatedTenant("drain"), await populatedTenant("drain"), await populatedTenant("drain")];
    const refusals: [MessageInitShape<typeof DrainClusterRequestSchema>, Code][] = [
      [{ cluster: "nowhere" }, Code.NotFound],
      [{ cluster: "" }, Code.InvalidArgument],
      [{ cluster: "default", maxConcurrency: 17 }, Code.InvalidArgument],
      [{ cluster: "default", maxConcurrency: -1 }, Code.InvalidArgument],
      [{ cluster: "default", mode: 42 as MoveMode }, Code.InvalidArgument],
      [{ cluster: "default", targetCluster: "default" }, Code.InvalidArgument],
      [{ cluster: "default", targetCluster: "nowhere" }, Code.NotFound],
      [{ cluster: "default", targetCluster: "closed" }, Code.FailedPrecondition],
    ];
    for (const [request, code] of refusals) {
      const { events, error } = await drain(request);
      expect([request, events, error?.code]).toEqual([request, [], code]);
    }
    expect(await stateOf("default")).toBe(ClusterState.ACCEPTING);
    expect((await moves.listMoves({})).moves).toEqual([]);
  });

  it("goes on after its caller cancels: the moves started are followed by the next call, and every tenant ends on the other cluster", async () => {
    const suspended = await populatedTenant("asleep");
    await mesh.platformClient.suspendTenant({ tenantId: suspended });
    const held = holdMovesAfter("create-database");
    const stop = new AbortController();
    const first: DrainClusterResponse[] = [];
    const cancelled = (async () => {
      for await (const event of moves.drainCluster({ cluster: "default", maxConcurrency: 2 }, { signal: stop.signal })) {
        first.push(event);
      }
    })().catch((error: unknown) => ConnectError.from(error));
    await held.reached;
    stop.abort();
    expect((await cancelled)?.code).toBe(Code.Canceled);
    expect(first[0]).toMatchObject({ event: DrainEvent.STARTED, totals: { total: 4, remaining: 4 } });
    expect(await stateOf("default")).toBe(ClusterState.DRAINING);
    const running = (await moves.listMoves({})).moves.filter((m) => m.state === MoveState.RUNNING);
    expect(running.length).toBeGreaterThanOrEqual(1);
    expect(running.length).toBeLessThanOrEqual(2);

    // Called again while those moves are held: it follows them rather than starting them again.
    const again = drain({ cluster: "default", maxConcurrency: 2, mode: MoveMode.COPY_UNDER_FREEZE });
    held.release();
    const { events, error } = await again;
    expect(kinds(events, DrainEvent.MOVE_FOLLOWED).map((e) => e.moveId).sort()).toEqual(running.map((m) => m.moveId).sort());
    expect(kinds(events, DrainEvent.MOVE_SUCCEEDED).map((e) => e.tenantId).sort()).toEqual([...tenants].sort());
    expect(kinds(events, DrainEvent.TENANT_LEFT).map((e) => [e.tenantId, e.error])).toEqual([[suspended, expect.stringMatching(/is suspended: only an ACTIVE tenant can be moved/)]]);
    expect(events.every((e) => e.totals!.moving <= 2)).toBe(true);
    expect(events.at(-1)).toMatchObject({ event: DrainEvent.FINISHED, totals: { total: 4, moved: 3, failed: 0, left: 1, remaining: 0, moving: 0 } });
    expect([error?.code, error?.rawMessage]).toEqual([Code.FailedPrecondition, expect.stringMatching(/^1 of 4 tenants were not moved off cluster "default" \(0 failed, 1 left as not ACTIVE\)/)]);
    for (const tenantId of tenants) {
      expect((await mesh.platformClient.getTenant({ tenantId })).tenant!.cluster).toBe("second");
      const { entries } = await retried(() => mesh.entries.listEntries({}, headers(tenantId)));
      expect(entries.map((e) => e.title).sort()).toEqual([`first of ${tenantId}`, `second of ${tenantId}`]);
    }
    expect((await moves.listMoves({})).moves.map((m) => m.state)).toEqual([MoveState.SUCCEEDED, MoveState.SUCCEEDED, MoveState.SUCCEEDED]);

    // Once resumed, the last tenant moves too, and a drain after that has nothing left to do.
    await mesh.platformClient.resumeTenant({ tenantId: suspended });
    const last = await drain({ cluster: "default" });
    expect([kinds(last.events, DrainEvent.MOVE_SUCCEEDED).map((e) => [e.tenantId, e.targetCluster]), last.error]).toEqual([[[suspended, "second"]], undefined]);
    const { entries } = await retried(() => mesh.entries.listEntries({}, headers(suspended)));
    expect(entries).toHaveLength(2);
    const done = await drain({ cluster: "default" });
    expect([done.events.map((e) => [DrainEvent[e.event], e.totals!.total, e.totals!.remaining]), done.error]).toEqual([
      [
        ["STARTED", 0, 0],
        ["FINISHED", 0, 0],
      ],
      undefined,
    ]);
    expect(await stateOf("default")).toBe(ClusterState.DRAINING);
    // Each call is audited once it ends: the eight refused, the cancelled one, the three after it.
    const { events: audited } = await mesh.platformClient.listAuditEvents({ pageSize: 500 });
    expect(audited.filter((e) => e.action === "DrainCluster")).toHaveLength(8 + 4);
  });

  it("refuses a drain whose tenants have nowhere to go, changing nothing", async () => {
    const tenantId = (await mesh.createTenant({ owner })).tenantId;
    expect((await mesh.platformClient.getTenant({ tenantId })).tenant!.cluster).toBe("second");
    const { events, error } = await drain({ cluster: "second" });
    expect([events, error?.code, error?.rawMessage]).toEqual([[], Code.FailedPrecondition, expect.stringMatching(/no other cluster accepts tenants/)]);
    expect(await stateOf("second")).toBe(ClusterState.ACCEPTING);
  });

  it("never takes a cluster on the drained cluster's own server, registered under another name, for a target", async () => {
    // Ample room, and accepting: only its server tells it apart.
    await clusters.registerCluster(second.registration("second-twin", { capacity: 1000 }));
    const auto = await drain({ cluster: "second" });
    expect([auto.events, auto.error?.code, auto.error?.rawMessage]).toEqual([[], Code.FailedPrecondition, expect.stringMatching(/no other cluster accepts tenants/)]);
    const named = await drain({ cluster: "second", targetCluster: "second-twin" });
    expect([named.events, named.error?.code, named.error?.rawMessage]).toEqual([[], Code.FailedPrecondition, expect.stringMatching(/"second" and "second-twin" are the same PostgreSQL server/)]);
    expect(await stateOf("second")).toBe(ClusterState.ACCEPTING);
    expect((await moves.listMoves({})).moves.filter((m) => m.targetCluster === "second-twin")).toEqual([]);
  });
});
