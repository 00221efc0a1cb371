import { describe, expect, it } from "vitest";
import { offboardingStepTable, offboardingSteps } from "./offboarding-steps.ts";

describe("offboarding steps", () => {
  it("run in order: the export before anything is taken away, the role last", () => {
    expect(offboardingSteps).toEqual(["requested", "export", "revoke-login", "drop-database", "drop-role"]);
  });

  it("each have their work, and the table has no step the order lacks", () => {
    expect(Object.keys(offboardingStepTable).sort()).toEqual([...offboardingSteps].sort());
    for (const step of offboardingSteps) {
      expect(offboardingStepTable[step].perform, step).toBeTypeOf("function");
    }
  });

  it("drop the database and the role only once the grace period is over", () => {
    expect(offboardingSteps.filter((step) => offboardingStepTable[step].afterGrace)).toEqual(["drop-database", "drop-role"]);
  });
});
