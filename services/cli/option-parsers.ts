import { InvalidArgumentError } from "commander";
import { Tier } from "../../gen/tenantry/platform/v1/platform_service_pb.js";

/** The tiers as options name them. */
export const tierNames = ["standard", "premium", "enterprise"];

/** The Tier an option named (one of {@link tierNames}). */
export function tierOf(name: string): Tier {
  return Tier[name.toUpperCase() as keyof typeof Tier];
}

const durationUnits: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Parses a duration such as "500ms", "30s", "2m" or "1h" (a bare number is seconds) into milliseconds. */
export function parseDuration(value: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(value.trim());
  if (match === null || Number(match[1]) <= 0) {
    throw new InvalidArgumentError("use a positive duration such as 500ms, 30s, 2m or 1h");
  }
  return Math.round(Number(match[1]) * durationUnits[match[2] ?? "s"]!);
}

/** Returns a parser of whole numbers from `min` to `max`. */
export function wholeNumber(min: number, max: number): (value: string) => number {
  return (value) => {
    const number = Number(value);
    if (!/^\d+$/.test(value) || number < min || number > max) {
      throw new InvalidArgumentError(`use a whole number from ${min} to ${max}`);
    }
    return number;
  };
}

/** Collects a repeatable option's values in order. */
export function repeatable(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}
