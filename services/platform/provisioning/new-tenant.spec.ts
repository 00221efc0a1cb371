import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { Tier } from "../../../gen/tenantry/platform/v1/platform_service_pb.js";
import { checkNewTenant, type NewTenant } from "./new-tenant.ts";

const request: NewTenant = { tenantId: "acme", displayName: "", tier: Tier.UNSPECIFIED, cluster: "", region: "", ownerEmail: "", ownerPassword: "" };

function refusal(change: Partial<NewTenant>): string | undefined {
  try {
    checkNewTenant({ ...request, ...change });
    return undefined;
  } catch (error) {
    const cause = ConnectError.from(error);
    expect(cause.code).toBe(Code.InvalidArgument);
    return cause.rawMessage;
  }
}

describe("a new tenant's request", () => {
  it("is named after its id unless it has a display name, which is trimmed", () => {
    expect(checkNewTenant(request).displayName).toBe("acme");
    expect(checkNewTenant({ ...request, displayName: "  Acme Inc.  " }).displayName).toBe("Acme Inc.");
    expect(refusal({ displayName: "x".repeat(201) })).toMatch(/display_name/);
  });

  it("is STANDARD unless it names a tier, which must exist", () => {
    expect(checkNewTenant(request).tier).toBe(Tier.STANDARD);
    expect(checkNewTenant({ ...request, tier: Tier.PREMIUM }).tier).toBe(Tier.PREMIUM);
    expect(refusal({ tier: 99 as Tier })).toMatch(/tier/);
  });

  it("has an owner with both email and password, or none", () => {
    expect(checkNewTenant({ ...request, ownerEmail: " owner@example.com ", ownerPassword: "correct horse battery" })).toMatchObject({ ownerEmail: "owner@example.com" });
    expect(refusal({ ownerEmail: "owner@example.com" })).toMatch(/owner_password/);
    expect(refusal({ ownerPassword: "correct horse battery" })).toMatch(/owner_email/);
  });

  it("has a well-formed id", () => {
    expect(refusal({ tenantId: "Not An Id" })).toBeDefined();
  });
});
