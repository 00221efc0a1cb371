import { describe, expect, it } from "vitest";
import {
  pointOfNoReturn,
  pooledRestoreRollbacks,
  pooledRestoreSteps,
  restoreRollbacks,
  restoreSteps,
  restoreStepTable,
  stepsOf,
  undoPointOfNoReturn,
  undoSteps,
} from "./restore-steps.ts";

describe("restore steps", () => {
  it("make, load and migrate the new database before the tenant is touched, in place", () => {
    expect(restoreSteps.in_place.join(" > ")).toBe(
      "create-database > secure-database > migrate-to-backup > load > migrate-forward > suspend > switch > close-previous > resume",
    );
    expect(pointOfNoReturn.in_place).toBe("switch");
  });

  it("make a clone with provisioning's steps and the backup loaded, then adopt it", () => {
    expect(restoreSteps.clone.join(" > ")).toBe("create-role > create-database > secure-database > migrate-to-backup > load > migrate-forward > adopt > activate");
  });

  it("drop what a drill made", () => {
    expect(restoreSteps.verify.slice(-2)).toEqual(["drop-database", "drop-role"]);
  });

  it("undo an in-place restore behind a suspension, going forward once switched back", () => {
    expect(undoSteps.join(" > ")).toBe("suspend > switch-back > drop-restored > resume");
    expect(undoPointOfNoReturn).toBe("switch-back");
  });

  it("of a pooled tenant in place load a new generation of its schemas, switched to at the same point of no return", () => {
    expect(pooledRestoreSteps.in_place.join(" > ")).toBe("create-schemas > migrate-to-backup > load > migrate-forward > suspend > switch > close-previous > resume");
    expect(stepsOf({ kind: "in_place", placement: "pooled" })).toBe(pooledRestoreSteps.in_place);
    expect(stepsOf({ kind: "in_place", placement: "dedicated" })).toBe(restoreSteps.in_place);
  });

  it("make a pooled clone with provisioning's pooled steps, and drill any backup in a scratch database", () => {
    expect(pooledRestoreSteps.clone.join(" > ")).toBe("choose-pool > create-role > create-schemas > migrate-to-backup > load > migrate-forward > adopt > activate");
    expect(stepsOf({ kind: "verify", placement: "pooled" })).toBe(restoreSteps.verify);
  });

  it("each have their work, and each kind its rollback", () => {
    const all = new Set([...Object.values(restoreSteps).flat(), ...Object.values(pooledRestoreSteps).flat(), ...undoSteps]);
    expect(Object.keys(restoreStepTable).sort()).toEqual([...all].sort());
    expect(Object.keys(restoreRollbacks).sort()).toEqual(["clone", "in_place", "undo", "verify"]);
    expect(Object.keys(pooledRestoreRollbacks).sort()).toEqual(["clone", "in_place"]);
  });
});
