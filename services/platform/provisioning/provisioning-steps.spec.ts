import { describe, expect, it } from "vitest";
import {
  pooledProvisioningSteps,
  pooledProvisioningStepTable,
  pooledRollbackSteps,
  provisioningPlanOf,
  provisioningStepTable,
  provisioningSteps,
  rollbackStepTable,
  rollbackSteps,
} from "./provisioning-steps.ts";

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

  it("each have their work, for both placements", () => {
    expect(Object.keys(rollbackStepTable).sort()).toEqual([...new Set([...rollbackSteps, ...pooledRollbackSteps])].sort());
    expect(Object.values(rollbackStepTable).every((work) => typeof work === "function")).toBe(true);
  });
});

describe("provisioning steps of a pooled tenant", () => {
  it("run in order from the record to ACTIVE, with a pool database chosen before the role is granted to its login", () => {
    expect(pooledProvisioningSteps.join(" > ")).toBe("register > choose-pool > take-slot > create-role > create-schemas > migrate-schemas > bootstrap > activate");
    expect(Object.keys(pooledProvisioningStepTable).sort()).toEqual([...pooledProvisioningSteps].sort());
  });

  it("are each recorded once done, but for the slot take, the role and the schemas, made again by a resumed run rather than recorded", () => {
    expect(pooledProvisioningSteps.filter((step) => pooledProvisioningStepTable[step].redoneOnResume === true)).toEqual(["take-slot", "create-role", "create-schemas"]);
  });

  it("are undone by dropping the schemas, then the role that owns them; never the shared pool database", () => {
    expect(pooledRollbackSteps).toEqual(["drop-schemas", "drop-role"]);
  });

  it("are the plan of a pooled tenant; every other tenant has the dedicated one", () => {
    expect(provisioningPlanOf("pooled").steps).toBe(pooledProvisioningSteps);
    expect(provisioningPlanOf("dedicated").steps).toBe(provisioningSteps);
    expect(provisioningPlanOf("dedicated").rollback).toBe(rollbackSteps);
  });
});
