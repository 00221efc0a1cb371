import { describe, expect, it } from "vitest";
import { provisioningStepTable, provisioningSteps, rollbackStepTable, rollbackSteps } from "./provisioning-steps.ts";

describe("provisioning steps", () => {
  it("run in order from the record to ACTIVE", () => {
    expect(provisioningSteps).toEqual(["register", "create-role", "create-database", "secure-database", "migrate-schemas", "bootstrap", "activate"]);
  });

  it("each have their work, and the table has no step the order lacks", () => {
    expect(Object.keys(provisioningStepTable).sort()).toEqual([...provisioningSteps].sort());
    for (const step of provisioningSteps) {
      expect(provisioningStepTable[step].perform, step).toBeTypeOf("function");
    }
  });

  it("are undone, where they make something, by a rollback step", () => {
    const undoneBy = Object.fromEntries(provisioningSteps.flatMap((step) => (provisioningStepTable[step].undoneBy === undefined ? [] : [[step, provisioningStepTable[step].undoneBy]])));
    expect(undoneBy).toEqual({ "create-role": "drop-role", "create-database": "drop-database" });
  });
});

describe("rollback steps", () => {
  it("undo the later step first: the database, then the role it belongs to", () => {
    expect(rollbackSteps).toEqual(["drop-database", "drop-role"]);
  });

  it("each have their work", () => {
    expect(Object.keys(rollbackStepTable).sort()).toEqual([...rollbackSteps].sort());
    for (const step of rollbackSteps) {
      expect(rollbackStepTable[step], step).toBeTypeOf("function");
    }
  });
});
