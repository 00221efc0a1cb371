import { describe, expect, it } from "vitest";
import { DefaultRole } from "../../../gen/tenantry/options/v1/access_pb.js";
import { TenantSchemaService } from "../../../gen/tenantry/schema/v1/tenant_schema_service_pb.js";
import { testContract } from "../../testing/test-contract.ts";
import { declaredPermissions } from "./declared-permissions.ts";

const invoices = testContract({
  typeName: "tenantry.billing.v1.InvoiceService",
  permissions: [
    { name: "invoices.read", description: "see invoices", defaultRoles: [DefaultRole.ADMIN, DefaultRole.MEMBER, DefaultRole.VIEWER] },
    { name: "invoices.write", description: "issue invoices", defaultRoles: [DefaultRole.ADMIN] },
  ],
  methods: { IssueInvoice: "invoices.write" },
});
const payments = testContract({
  typeName: "tenantry.billing.v1.PaymentService",
  permissions: [
    { name: "payments.refund", description: "refund payments" },
    { name: "invoices.read", description: "see invoices and their payments", defaultRoles: [DefaultRole.VIEWER] },
  ],
  methods: {},
});

const summary = (services: Parameters<typeof declaredPermissions>[0]) =>
  declaredPermissions(services).map((p) => [p.name, p.description, p.defaultRoles.map((r) => DefaultRole[r])]);

describe("declared permissions", () => {
  it("are read from the RPC services' options, in the order declared, with their default roles", () => {
    expect(summary([invoices, payments])).toEqual([
      ["invoices.read", "see invoices", ["ADMIN", "MEMBER", "VIEWER"]],
      ["invoices.write", "issue invoices", ["ADMIN"]],
      ["payments.refund", "refund payments", []],
    ]);
  });

  it("keep the first declaration of a name declared again", () => {
    expect(summary([payments, invoices]).map(([name, description]) => `${name}: ${description}`)).toEqual([
      "payments.refund: refund payments",
      "invoices.read: see invoices and their payments",
      "invoices.write: issue invoices",
    ]);
  });

  it("are none for a service that declares none", () => {
    expect(declaredPermissions([TenantSchemaService])).toEqual([]);
  });
});
