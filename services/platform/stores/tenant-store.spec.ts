import { describe, expect, it } from "vitest";
import { TenantStatus, Tier } from "../../../gen/tenantry/platform/v1/platform_service_pb.js";
import { statusName, statusNames, statusOf, tierName, tierOf } from "./tenant-store.ts";

const valuesOf = <E extends number>(values: Record<string, string | number>) => Object.values(values).filter((v): v is E => typeof v === "number" && v !== 0);

describe("the tenant store's spellings", () => {
  it("spell each status and tier as its lower-case name, and read it back", () => {
    expect(statusName(TenantStatus.OFFBOARDING)).toBe("offboarding");
    expect(tierName(Tier.ENTERPRISE)).toBe("enterprise");
    expect(valuesOf<TenantStatus>(TenantStatus).every((status) => statusOf(statusName(status)) === status)).toBe(true);
    expect(valuesOf<Tier>(Tier).every((tier) => tierOf(tierName(tier)) === tier)).toBe(true);
  });

  it("read a name they do not know as UNSPECIFIED", () => {
    expect([statusOf("archived"), tierOf("gold")]).toEqual([TenantStatus.UNSPECIFIED, Tier.UNSPECIFIED]);
  });

  it("name every status once in statusNames", () => {
    expect(Object.values(statusNames).sort()).toEqual(valuesOf<TenantStatus>(TenantStatus).map(statusName).sort());
  });
});
