import { InvalidArgumentError } from "commander";
import { describe, expect, it } from "vitest";
import { checkEntityName, checkServiceName, serviceNaming } from "./service-naming.ts";

describe("a new service's names", () => {
  it("follow from its name and its entity's, each as its place spells it", () => {
    expect(serviceNaming("audit-log", "line-item")).toEqual({
      name: "audit-log",
      title: "Audit log",
      camel: "auditLog",
      Pascal: "AuditLog",
      package: "audit_log",
      entity: "lineItem",
      Entity: "LineItem",
      entities: "lineItems",
      Entities: "LineItems",
      entity_snake: "line_item",
      entities_snake: "line_items",
      entity_file: "line-item",
      entities_file: "line-items",
      entity_words: "line item",
      entities_words: "line items",
    });
    expect(serviceNaming("billing", "item")).toMatchObject({ title: "Billing", Pascal: "Billing", package: "billing", Entities: "Items" });
  });

  it("make an entity's regular plural", () => {
    const plural = (entity: string) => serviceNaming("billing", entity).entities_file;
    expect(["invoice", "address", "box", "batch", "wish", "entry", "day", "line-item", "tax-policy"].map(plural)).toEqual([
      "invoices",
      "addresses",
      "boxes",
      "batches",
      "wishes",
      "entries",
      "days",
      "line-items",
      "tax-policies",
    ]);
  });

  it("take service names of lower-case letters, digits and single hyphens, starting with a letter, of at most 16 characters (a pooled tenant's schema name prefixes it)", () => {
    for (const name of ["billing", "audit-log", "v2", "a".repeat(16)]) {
      expect(checkServiceName(name)).toBe(name);
    }
    for (const name of ["", "Billing", "9lives", "audit_log", "audit--log", "audit-", "-audit", "billing service", "a".repeat(17), "café"]) {
      expect(() => checkServiceName(name), name).toThrow(InvalidArgumentError);
    }
  });

  it("take entity names of lower-case words of letters joined by single hyphens", () => {
    expect(checkEntityName("line-item")).toBe("line-item");
    for (const entity of ["", "Invoice", "item2", "line_item", "line--item", "-item"]) {
      expect(() => checkEntityName(entity), entity).toThrow(InvalidArgumentError);
    }
  });
});
