import { describe, expect, it } from "vitest";
import { refusal } from "../../testing/failure.ts";
import { checkTextLine } from "./text-line.ts";

describe("a text line", () => {
  it("is taken trimmed, counted in characters", () => {
    expect(checkTextLine("  before the import ✓ \n", "label", 200)).toBe("before the import ✓");
    expect(checkTextLine("😀".repeat(200), "label", 200)).toHaveLength(400);
    expect(checkTextLine("", "label", 200)).toBe("");
    expect(refusal(() => checkTextLine("😀".repeat(201), "label", 200))).toBe("label is longer than 200 characters");
  });

  it("refuses control characters inside it, naming the first", () => {
    for (const [value, codePoint] of [["a\u0000b", "0000"], ["two\nlines", "000A"], ["tab\there", "0009"], ["esc\u001b[31m", "001B"], ["del\u007f", "007F"], ["c1\u0085x", "0085"]] as const) {
      expect(refusal(() => checkTextLine(value, "display_name", 200)), JSON.stringify(value)).toBe(`display_name has a control character (U+${codePoint}); use printable text on one line`);
    }
  });
});
