import { describe, expect, it } from "vitest";
import { DefaultRole } from "../gen/tenantry/options/v1/access_pb.js";
import { testContract } from "../services/testing/test-contract.ts";
import { checkPermissions } from "./check-permissions.ts";
import { contractServices } from "./contract-services.ts";

/** A service of its own, declaring invoices.read and invoices.write, whose methods need `needs`. */
const billing = (needs: Record<string, string> = { GetInvoice: "invoices.read", IssueInvoice: "invoices.write" }) =>
  testContract({
    typeName: "tenantry.billing.v1.InvoiceService",
    permissions: [
      { name: "invoices.read", description: "see invoices", defaultRoles: [DefaultRole.ADMIN, DefaultRole.VIEWER] },
      { name: "invoices.write", description: "issue invoices", defaultRoles: [DefaultRole.ADMIN] },
    ],
    methods: needs,
  });

describe("permission rules", () => {
  it("hold for every contract in gen/", async () => {
    const services = await contractServices();
    expect(services.map((s) => s.typeName)).toEqual(expect.arrayContaining(["tenantry.auth.v1.UserService", "tenantry.backend.v1.EntryService"]));
    expect(checkPermissions(services)).toEqual([]);
  });

  it("take a permission declared by any service, the method's own or another", () => {
    const reports = testContract({ typeName: "tenantry.reports.v1.ReportService", permissions: [], methods: { ListInvoiceTotals: "invoices.read" } });
    expect(checkPermissions([billing(), reports])).toEqual([]);
  });

  it("refuse a method that needs a permission no service declares, naming the method and the permission", () => {
    expect(checkPermissions([billing({ IssueInvoice: "invoices.wirte" })])).toEqual([
      'tenantry.billing.v1.InvoiceService/IssueInvoice needs permission "invoices.wirte", which no service declares: no tenant\'s role could ever grant it; declare it with the (tenantry.options.v1.permissions) option of the RPC service that owns it',
    ]);
  });

  it("refuse a permission declared twice, a malformed name and a default role that is none", () => {
    const again = testContract({
      typeName: "tenantry.ledger.v1.LedgerService",
      permissions: [
        { name: "invoices.write", description: "post invoices" },
        { name: "Ledger", description: "everything" },
        { name: "ledger.read", description: "read the ledger", defaultRoles: [DefaultRole.UNSPECIFIED] },
      ],
      methods: {},
    });
    expect(checkPermissions([billing(), again])).toEqual([
      'tenantry.ledger.v1.LedgerService declares permission "invoices.write", which tenantry.billing.v1.InvoiceService declares already: declare each permission once, on the RPC service that owns it',
      'tenantry.ledger.v1.LedgerService declares permission "Ledger": a permission\'s name is lower-case words joined by dots, such as "entries.read", of at most 100 characters',
      'tenantry.ledger.v1.LedgerService declares permission "ledger.read" with default role DEFAULT_ROLE_UNSPECIFIED, which is no role: name admin, member or viewer (the owner holds every permission)',
    ]);
  });
});
