import { describe, expect, it } from "vitest";
import { provisioningStepTable, provisioningSteps, rollbackStepTable, rollbackSteps } from "./provisioning-steps.ts";

describe("provisioning steps", () => {
  it("run in order from the record to ACTIVE", () => {
    expect(provisioningSteps.join(" > ")).toBe("register > create-role > take-database > create-database > secure-database > migrate-schemas > bootstrap > activate");
  });

  it("each have their work in the table, which has no other step", () => {
    expect(Object.keys(provisioningStepTable).sort()).toEqual([...provisioningSteps].sort());
    expect(provisioningSteps.filter((step) => typeof provisioningStepTable[step].perform !== "function")).toEqual([]);
  });

  it("are undone by a rollback step where they make something: the role and the database, taken from the stock or made", () => {
    const undone = provisioningSteps.filter((step) => provisioningStepTable[step].undoneBy !== undefined).map((step) => `${step} by ${provisioningStepTable[step].undoneBy}`);
    expect(undone).toEqual(["create-role by drop-role", "take-database by drop-database", "create-database by drop-database"]);
  });
});

describe("rollback steps", () => {
  it("undo the later step first, each once: the database, then the role that owns it", () => {
    expect(rollbackSteps).toEqual(["drop-database", "drop-role"]);
  });

  it("each have their work", () => {
    expect(Object.keys(rollbackStepTable).sort()).toEqual([...rollbackSteps].sort());
    expect(rollbackSteps.every((step) => typeof rollbackStepTable[step] === "function")).toBe(true);
  });
});
