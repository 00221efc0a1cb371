import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { chooseCluster, type PlacementCandidate } from "./placement.ts";

/** Clusters in name order, as the cluster store lists them. */
const clusters: PlacementCandidate[] = [
  { cluster: { name: "alpha", state: "accepting", region: "eu", capacity: 10 }, tenantCount: 4 },
  { cluster: { name: "bravo", state: "accepting", region: "eu", capacity: 10 }, tenantCount: 4 },
  { cluster: { name: "charlie", state: "draining", region: "us", capacity: 100 }, tenantCount: 0 },
  { cluster: { name: "delta", state: "accepting", region: "us", capacity: 5 }, tenantCount: 5 },
  { cluster: { name: "echo", state: "accepting", region: "ap", capacity: 3 }, tenantCount: 1 },
];

function refusal(wanted: { cluster?: string; region?: string }, among = clusters): Code | undefined {
  try {
    chooseCluster(among, { cluster: "", region: "", ...wanted });
    return undefined;
  } catch (error) {
    return ConnectError.from(error).code;
  }
}

describe("placement", () => {
  it("takes the accepting cluster with the most room, the first by name among equals", () => {
    expect(chooseCluster(clusters, { cluster: "", region: "" })).toBe("alpha");
    const roomier = clusters.map((c) => (c.cluster.name === "bravo" ? { ...c, tenantCount: 3 } : c));
    expect(chooseCluster(roomier, { cluster: "", region: "" })).toBe("bravo");
  });

  it("looks only in the region asked for", () => {
    expect(chooseCluster(clusters, { cluster: "", region: "ap" })).toBe("echo");
    expect(refusal({ region: "us" })).toBe(Code.ResourceExhausted);
    expect(refusal({ region: "mars" })).toBe(Code.FailedPrecondition);
  });

  it("never chooses a draining cluster, however roomy", () => {
    expect(chooseCluster(clusters, { cluster: "", region: "" })).not.toBe("charlie");
    expect(refusal({}, clusters.filter((c) => c.cluster.state === "draining"))).toBe(Code.FailedPrecondition);
  });

  it("takes the cluster asked for, if it accepts and has room, whatever the region", () => {
    expect(chooseCluster(clusters, { cluster: "echo", region: "eu" })).toBe("echo");
    expect(refusal({ cluster: "charlie" })).toBe(Code.FailedPrecondition);
    expect(refusal({ cluster: "delta" })).toBe(Code.ResourceExhausted);
    expect(refusal({ cluster: "zulu" })).toBe(Code.InvalidArgument);
  });

  it("refuses when nothing is registered", () => {
    expect(refusal({}, [])).toBe(Code.FailedPrecondition);
  });
});
