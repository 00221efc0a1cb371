import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { chooseCluster, type PlacementCandidate, type PlacementRequest } from "./placement.ts";

/** Clusters in name order, as the cluster store lists them. */
const clusters: PlacementCandidate[] = [
  { cluster: { name: "alpha", state: "accepting", region: "eu", capacity: 10, poolCapacity: 100 }, tenantCount: 4, pooledCount: 0 },
  { cluster: { name: "bravo", state: "accepting", region: "eu", capacity: 10, poolCapacity: 100 }, tenantCount: 4, pooledCount: 0 },
  { cluster: { name: "charlie", state: "draining", region: "us", capacity: 100, poolCapacity: 100 }, tenantCount: 0, pooledCount: 0 },
  { cluster: { name: "delta", state: "accepting", region: "us", capacity: 5, poolCapacity: 100 }, tenantCount: 5, pooledCount: 0 },
  { cluster: { name: "echo", state: "accepting", region: "ap", capacity: 3, poolCapacity: 100 }, tenantCount: 1, pooledCount: 0 },
];

/** The cluster chosen, or the code of the refusal. */
function placed(wanted: Partial<PlacementRequest>, among = clusters): string {
  try {
    return chooseCluster(among, { cluster: "", region: "", ...wanted });
  } catch (error) {
    return Code[ConnectError.from(error).code];
  }
}

describe("placement", () => {
  it("takes the accepting cluster with the most room, the first by name among equals, never a draining one", () => {
    expect(placed({})).toBe("alpha");
    expect(placed({}, clusters.map((c) => (c.cluster.name === "bravo" ? { ...c, tenantCount: 3 } : c)))).toBe("bravo");
    expect(placed({}, clusters.filter((c) => c.cluster.state === "draining"))).toBe("FailedPrecondition");
  });

  it("looks only in the region asked for", () => {
    expect([placed({ region: "ap" }), placed({ region: "us" }), placed({ region: "mars" })]).toEqual(["echo", "ResourceExhausted", "FailedPrecondition"]);
  });

  it("takes the cluster asked for, whatever the region, if it is registered, accepting and not full", () => {
    const asked = ["echo", "charlie", "delta", "zulu"].map((cluster) => placed({ cluster, region: "eu" }));
    expect(asked).toEqual(["echo", "FailedPrecondition", "ResourceExhausted", "InvalidArgument"]);
  });

  it("weighs a pooled tenant against the pool capacity and a dedicated one against the capacity", () => {
    const full = clusters.map((c) => (c.cluster.name === "delta" ? { ...c, pooledCount: 99 } : c));
    // delta holds all the dedicated tenants it may, and has room for one more pooled one.
    expect([placed({ cluster: "delta", pooled: true }, full), placed({ cluster: "delta" }, full)]).toEqual(["delta", "ResourceExhausted"]);
    const crowded = full.map((c) => (c.cluster.name === "delta" ? { ...c, pooledCount: 100 } : c));
    expect(placed({ cluster: "delta", pooled: true }, crowded)).toBe("ResourceExhausted");
    // alpha has the most pooled room in the eu region once bravo's pooled tenants are counted.
    expect(placed({ region: "eu", pooled: true }, clusters.map((c) => (c.cluster.name === "alpha" ? { ...c, tenantCount: 9 } : c.cluster.name === "bravo" ? { ...c, pooledCount: 50 } : c)))).toBe("alpha");
  });

  it("refuses when no cluster is registered", () => {
    expect(placed({}, [])).toBe("FailedPrecondition");
  });
});
