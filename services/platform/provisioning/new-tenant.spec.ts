import { describe, expect, it } from "vitest";
import { Tier } from "../../../gen/tenantry/platform/v1/platform_service_pb.js";
import { refusal } from "../../testing/failure.ts";
import { checkNewTenant, type NewTenant } from "./new-tenant.ts";

const request: NewTenant = { tenantId: "acme", displayName: "", tier: Tier.UNSPECIFIED, cluster: "", region: "", ownerEmail: "", ownerPassword: "" };

const refused = (change: Partial<NewTenant>) => refusal(() => checkNewTenant({ ...request, ...change }));

describe("a new tenant's request", () => {
  it("is named after its id unless it has a display name, which is trimmed", () => {
    expect(checkNewTenant(request).displayName).toBe("acme");
    expect(checkNewTenant({ ...request, displayName: "  Acme Inc.  " }).displayName).toBe("Acme Inc.");
    expect(refused({ displayName: "x".repeat(201) })).toMatch(/display_name/);
    expect(refused({ displayName: "Acme\nInc." })).toBe("display_name has a control character (U+000A); use printable text on one line");
  });

  it("is STANDARD unless it names a tier, which must exist", () => {
    expect(checkNewTenant(request).tier).toBe(Tier.STANDARD);
    expect(checkNewTenant({ ...request, tier: Tier.PREMIUM }).tier).toBe(Tier.PREMIUM);
    expect(refused({ tier: 99 as Tier })).toMatch(/tier/);
  });

  it("has an owner with both email and password, or none", () => {
    expect(checkNewTenant({ ...request, ownerEmail: " owner@example.com ", ownerPassword: "correct horse battery" })).toMatchObject({ ownerEmail: "owner@example.com" });
    expect(refused({ ownerEmail: "owner@example.com" })).toMatch(/owner_password/);
    expect(refused({ ownerPassword: "correct horse battery" })).toMatch(/owner_email/);
  });

  it("has a well-formed id", () => {
    expect(refused({ tenantId: "Not An Id" })).toBeDefined();
  });
});
