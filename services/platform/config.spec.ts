import { describe, expect, it } from "vitest";
import { ConfigError } from "../mesh/index.ts";
import { readPlatformConfig } from "./config.ts";

const gib = 1024 ** 3;

/** The tier limits Platform reads from `TENANTRY_TIER_LIMITS` (unset when undefined). */
function tierLimits(value?: string) {
  const env = { TENANTRY_DATABASE_URL: "postgres://postgres@127.0.0.1:5432/tenantry_platform", ...(value === undefined ? {} : { TENANTRY_TIER_LIMITS: value }) };
  return Object.fromEntries(readPlatformConfig(env).TENANTRY_TIER_LIMITS);
}

/** The message of the ConfigError that `value` makes Platform's configuration fail with. */
function refusal(value: string): string {
  try {
    tierLimits(value);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as Error).message;
  }
  throw new Error(`expected TENANTRY_TIER_LIMITS="${value}" to be refused`);
}

describe("tier limits", () => {
  it("are STANDARD 50 users / 10 GB, PREMIUM 200 / 50 GB and ENTERPRISE unlimited unless configured", () => {
    expect(tierLimits()).toEqual({
      standard: { maxUsers: 50, maxStorageBytes: 10 * gib },
      premium: { maxUsers: 200, maxStorageBytes: 50 * gib },
      enterprise: { maxUsers: 0, maxStorageBytes: 0 },
    });
  });

  it("change only the tiers named, as users/size", () => {
    expect(tierLimits("standard=6/10GB")).toEqual({
      standard: { maxUsers: 6, maxStorageBytes: 10 * gib },
      premium: { maxUsers: 200, maxStorageBytes: 50 * gib },
      enterprise: { maxUsers: 0, maxStorageBytes: 0 },
    });
    expect(tierLimits(" premium=300/1TB , enterprise=1000/2TB,")).toMatchObject({
      premium: { maxUsers: 300, maxStorageBytes: 1024 ** 4 },
      enterprise: { maxUsers: 1000, maxStorageBytes: 2 * 1024 ** 4 },
    });
  });

  it("read sizes in bytes, kB, MB, GB or TB (powers of 1024, any letter case, fractions rounded to a byte)", () => {
    expect(tierLimits("standard=50/12MB").standard).toEqual({ maxUsers: 50, maxStorageBytes: 12 * 1024 ** 2 });
    expect(tierLimits("standard=1/512b").standard?.maxStorageBytes).toBe(512);
    expect(tierLimits("standard=1/3kb").standard?.maxStorageBytes).toBe(3 * 1024);
    expect(tierLimits("STANDARD=1/1.5Gb").standard?.maxStorageBytes).toBe(1.5 * gib);
    expect(tierLimits("standard=1/0.3kB").standard?.maxStorageBytes).toBe(307);
  });

  it("take unlimited (or a size of 0) for no limit", () => {
    expect(tierLimits("standard=unlimited/unlimited").standard).toEqual({ maxUsers: 0, maxStorageBytes: 0 });
    expect(tierLimits("premium=10/0").premium).toEqual({ maxUsers: 10, maxStorageBytes: 0 });
  });

  it("refuse at start what they cannot read, naming the variable, the form and the item", () => {
    for (const value of ["standard=50", "standard=50/10", "gold=5/1GB", "standard=-1/1GB", "standard=5/10PB", "standard:5/1GB"]) {
      const message = refusal(value);
      expect(message, value).toMatch(/TENANTRY_TIER_LIMITS/);
      expect(message, value).toContain(`expected tier=users/size such as standard=50/10GB, got "${value}"`);
    }
  });
});
