import { MethodOptions_IdempotencyLevel as Level } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { testContract } from "../services/testing/test-contract.ts";
import { checkIdempotency, declaredLevels } from "./check-idempotency.ts";
import { contractServices } from "./contract-services.ts";

/** An invoice service whose methods declare the levels given (none where not given). */
const invoices = (idempotency: Record<string, Level>) =>
  testContract({
    typeName: "tenantry.billing.v1.InvoiceService",
    permissions: [{ name: "invoices.read", description: "see invoices" }],
    methods: { GetInvoice: "invoices.read", IssueInvoice: "invoices.read", VoidInvoice: "invoices.read" },
    idempotency,
  });

describe("idempotency rules", () => {
  it("hold for every contract in gen/", async () => {
    const services = await contractServices();
    expect(checkIdempotency(services)).toEqual([]);
    const levels = declaredLevels(services);
    expect(levels.get("tenantry.backend.v1.EntryService/GetEntry")).toBe(Level.NO_SIDE_EFFECTS);
    expect(levels.get("tenantry.backend.v1.EntryService/CreateEntry")).toBe(Level.IDEMPOTENCY_UNKNOWN);
    expect(levels.get("tenantry.backend.v1.EntryService/DeleteEntry")).toBe(Level.IDEMPOTENT);
    // Vendored contracts are not Tenantry's to declare.
    expect([...levels.keys()].filter((m) => m.startsWith("grpc."))).toEqual([]);
  });

  it("take a read, an idempotent write and another write written out as IDEMPOTENCY_UNKNOWN", () => {
    const declared = invoices({ GetInvoice: Level.NO_SIDE_EFFECTS, IssueInvoice: Level.IDEMPOTENCY_UNKNOWN, VoidInvoice: Level.IDEMPOTENT });
    expect(checkIdempotency([declared])).toEqual([]);
  });

  it("refuse a method that declares no level, naming it", () => {
    expect(checkIdempotency([invoices({ GetInvoice: Level.NO_SIDE_EFFECTS, VoidInvoice: Level.IDEMPOTENT })])).toEqual([
      "tenantry.billing.v1.InvoiceService/IssueInvoice does not declare whether it writes: set option idempotency_level = NO_SIDE_EFFECTS for a read, IDEMPOTENT for a write whose repeat has the effect of one call, IDEMPOTENCY_UNKNOWN (written out) for any other write",
    ]);
  });

  it("let a method declare its first level, and refuse a change of a declared one", () => {
    const before = invoices({ GetInvoice: Level.NO_SIDE_EFFECTS, VoidInvoice: Level.IDEMPOTENT });
    const after = invoices({ GetInvoice: Level.IDEMPOTENT, IssueInvoice: Level.IDEMPOTENCY_UNKNOWN, VoidInvoice: Level.IDEMPOTENT });
    expect(checkIdempotency([after], [before])).toEqual([
      "tenantry.billing.v1.InvoiceService/GetInvoice changed its idempotency_level from NO_SIDE_EFFECTS to IDEMPOTENT: clients and proxies rely on a released level (retries, HTTP GET, write freezes); add a method instead",
    ]);
  });
});
