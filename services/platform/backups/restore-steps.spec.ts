import { describe, expect, it } from "vitest";
import { pointOfNoReturn, restoreRollbacks, restoreSteps, restoreStepTable, undoPointOfNoReturn, undoSteps } from "./restore-steps.ts";

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

  it("each have their work, and each kind its rollback", () => {
    const all = new Set([...Object.values(restoreSteps).flat(), ...undoSteps]);
    expect(Object.keys(restoreStepTable).sort()).toEqual([...all].sort());
    expect(Object.keys(restoreRollbacks).sort()).toEqual(["clone", "in_place", "undo", "verify"]);
  });
});
