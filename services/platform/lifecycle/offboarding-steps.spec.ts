import { describe, expect, it } from "vitest";
import { offboardingStepTable, offboardingSteps } from "./offboarding-steps.ts";

describe("offboarding steps", () => {
  it("export before anything is taken away, and drop the role last", () => {
    expect(offboardingSteps.join(" > ")).toBe("requested > export > revoke-login > drop-database > drop-role");
  });

  it("each have their work in the table, which has no other step", () => {
    expect(new Set(Object.keys(offboardingStepTable))).toEqual(new Set(offboardingSteps));
    expect(offboardingSteps.every((step) => typeof offboardingStepTable[step].perform === "function")).toBe(true);
  });

  it("drop the database and the role only once the grace period is over", () => {
    expect(offboardingSteps.filter((step) => offboardingStepTable[step].afterGrace)).toEqual(["drop-database", "drop-role"]);
  });
});
