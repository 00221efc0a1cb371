import { describe, expect, it } from "vitest";
import { ConfigError } from "../mesh/index.ts";
import { backupRateOf, readPlatformConfig } from "./config.ts";

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

describe("tier placements", () => {
  const base = { TENANTRY_DATABASE_URL: "postgres://postgres@127.0.0.1:5432/tenantry_platform" };
  const placements = (value?: string) => Object.fromEntries(readPlatformConfig({ ...base, ...(value === undefined ? {} : { TENANTRY_TIER_PLACEMENTS: value }) }).TENANTRY_TIER_PLACEMENTS);

  it("are pooled for STANDARD and dedicated for PREMIUM and ENTERPRISE unless configured, with pool databases of at most 1000 tenants", () => {
    expect(placements()).toEqual({ standard: "pooled", premium: "dedicated", enterprise: "dedicated" });
    expect(placements("")).toEqual({ standard: "pooled", premium: "dedicated", enterprise: "dedicated" });
    expect(readPlatformConfig(base).TENANTRY_POOL_MAX_TENANTS).toBe(1000);
  });

  it("change only the tiers named", () => {
    expect(placements("Standard=DEDICATED")).toEqual({ standard: "dedicated", premium: "dedicated", enterprise: "dedicated" });
    expect(placements("premium=pooled, enterprise=pooled")).toEqual({ standard: "pooled", premium: "pooled", enterprise: "pooled" });
  });

  it("refuse anything but tier=dedicated or tier=pooled, naming the variable", () => {
    for (const value of ["standard", "standard=shared", "gold=pooled"]) {
      expect(() => placements(value), value).toThrow(/TENANTRY_TIER_PLACEMENTS.*expected tier=placement such as standard=pooled/s);
    }
  });

  it("are moved to on a tier change unless TENANTRY_TIER_CHANGE_MOVES is false", () => {
    expect(readPlatformConfig(base).TENANTRY_TIER_CHANGE_MOVES).toBe(true);
    expect(readPlatformConfig({ ...base, TENANTRY_TIER_CHANGE_MOVES: "false" }).TENANTRY_TIER_CHANGE_MOVES).toBe(false);
    expect(() => readPlatformConfig({ ...base, TENANTRY_TIER_CHANGE_MOVES: "yes" })).toThrow(/TENANTRY_TIER_CHANGE_MOVES/);
  });
});

describe("backup storage settings", () => {
  const base = { TENANTRY_DATABASE_URL: "postgres://postgres@127.0.0.1:5432/tenantry_platform" };
  const read = (env: Record<string, string>) => readPlatformConfig({ ...base, ...env });
  /** The lines of the ConfigError that `env` makes Platform's configuration fail with. */
  function refusal(env: Record<string, string>): string[] {
    try {
      read(env);
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      return (error as Error).message.split("\n");
    }
    throw new Error(`expected ${JSON.stringify(env)} to be refused`);
  }

  it("keep backups in the data directory unless a bucket is set", () => {
    const config = read({});
    expect(config.TENANTRY_BACKUP_S3_BUCKET).toBeUndefined();
    expect(config).toMatchObject({ TENANTRY_BACKUP_S3_PREFIX: "backups", TENANTRY_BACKUP_S3_FORCE_PATH_STYLE: false });
    // Empty is unset, as for every setting (a ConfigMap key left blank).
    expect(read({ TENANTRY_BACKUP_S3_BUCKET: "", TENANTRY_BACKUP_S3_ENDPOINT: "" }).TENANTRY_BACKUP_S3_BUCKET).toBeUndefined();
  });

  it("read a bucket with its region, endpoint, path style, key and prefix", () => {
    expect(
      read({
        TENANTRY_BACKUP_S3_BUCKET: "acme-backups.eu",
        TENANTRY_BACKUP_S3_REGION: "eu-west-1",
        TENANTRY_BACKUP_S3_ENDPOINT: "https://minio.example:9000",
        TENANTRY_BACKUP_S3_FORCE_PATH_STYLE: "true",
        TENANTRY_BACKUP_S3_ACCESS_KEY_ID: "AKIAEXAMPLE",
        TENANTRY_BACKUP_S3_SECRET_ACCESS_KEY: "wJalrXUtnFEMI/K7MDENG",
        TENANTRY_BACKUP_S3_PREFIX: "/prod/tenantry/",
      }),
    ).toMatchObject({
      TENANTRY_BACKUP_S3_BUCKET: "acme-backups.eu",
      TENANTRY_BACKUP_S3_REGION: "eu-west-1",
      TENANTRY_BACKUP_S3_ENDPOINT: "https://minio.example:9000",
      TENANTRY_BACKUP_S3_FORCE_PATH_STYLE: true,
      TENANTRY_BACKUP_S3_ACCESS_KEY_ID: "AKIAEXAMPLE",
      TENANTRY_BACKUP_S3_SECRET_ACCESS_KEY: "wJalrXUtnFEMI/K7MDENG",
      TENANTRY_BACKUP_S3_PREFIX: "prod/tenantry",
    });
    expect(read({ TENANTRY_BACKUP_S3_BUCKET: "b-1", TENANTRY_BACKUP_S3_REGION: "auto", TENANTRY_BACKUP_S3_PREFIX: "/" }).TENANTRY_BACKUP_S3_PREFIX).toBe("");
  });

  it("refuse at start a bucket without its region, half a key, or S3 settings without a bucket", () => {
    expect(refusal({ TENANTRY_BACKUP_S3_BUCKET: "tenantry-backups" })).toEqual([
      "TENANTRY_BACKUP_S3_REGION: required with TENANTRY_BACKUP_S3_BUCKET: the bucket's region, such as eu-west-1 (not set)",
    ]);
    expect(refusal({ TENANTRY_BACKUP_S3_BUCKET: "tenantry-backups", TENANTRY_BACKUP_S3_REGION: "us-east-1", TENANTRY_BACKUP_S3_ACCESS_KEY_ID: "AKIAEXAMPLE" })).toEqual([
      "TENANTRY_BACKUP_S3_SECRET_ACCESS_KEY: required with TENANTRY_BACKUP_S3_ACCESS_KEY_ID, or unset both for the SDK's default credentials (not set)",
    ]);
    expect(refusal({ TENANTRY_BACKUP_S3_ENDPOINT: "http://127.0.0.1:9000", TENANTRY_BACKUP_S3_FORCE_PATH_STYLE: "true" })).toEqual([
      "TENANTRY_BACKUP_S3_ENDPOINT: set, but TENANTRY_BACKUP_S3_BUCKET is not (backups go to the data directory): set the bucket too, or unset this",
      "TENANTRY_BACKUP_S3_FORCE_PATH_STYLE: set, but TENANTRY_BACKUP_S3_BUCKET is not (backups go to the data directory): set the bucket too, or unset this",
    ]);
  });

  it("refuse at start values of the wrong form, naming the variable, and never show the secret or a URL's password", () => {
    const bucket = { TENANTRY_BACKUP_S3_BUCKET: "tenantry-backups", TENANTRY_BACKUP_S3_REGION: "us-east-1" };
    expect(refusal({ ...bucket, TENANTRY_BACKUP_S3_ENDPOINT: "minio:9000" })).toEqual(['TENANTRY_BACKUP_S3_ENDPOINT: expected an http:// or https:// URL (got "minio:9000")']);
    expect(refusal({ ...bucket, TENANTRY_BACKUP_S3_ENDPOINT: "ftp://minio.example" })[0]).toMatch(/^TENANTRY_BACKUP_S3_ENDPOINT: expected an http:\/\/ or https:\/\/ URL/);
    const withKey = refusal({ ...bucket, TENANTRY_BACKUP_S3_ENDPOINT: "https://AKIAEXAMPLE:wJalrXUtnFEMI@minio.example" });
    expect(withKey).toEqual([
      'TENANTRY_BACKUP_S3_ENDPOINT: keys go in TENANTRY_BACKUP_S3_ACCESS_KEY_ID and TENANTRY_BACKUP_S3_SECRET_ACCESS_KEY, not in the URL (got "https://AKIAEXAMPLE:***@minio.example")',
    ]);
    expect(refusal({ TENANTRY_BACKUP_S3_BUCKET: "Tenantry_Backups", TENANTRY_BACKUP_S3_REGION: "us-east-1" })[0]).toMatch(/^TENANTRY_BACKUP_S3_BUCKET: expected a bucket name/);
    expect(refusal({ ...bucket, TENANTRY_BACKUP_S3_REGION: "EU West" })[0]).toMatch(/^TENANTRY_BACKUP_S3_REGION: expected a region such as eu-west-1/);
    expect(refusal({ ...bucket, TENANTRY_BACKUP_S3_FORCE_PATH_STYLE: "yes" })[0]).toMatch(/^TENANTRY_BACKUP_S3_FORCE_PATH_STYLE: /);
    expect(refusal({ ...bucket, TENANTRY_BACKUP_S3_PREFIX: "a/../b" })[0]).toMatch(/^TENANTRY_BACKUP_S3_PREFIX: expected folder names/);
  });
});

describe("backup schedules", () => {
  const url = { TENANTRY_DATABASE_URL: "postgres://postgres@127.0.0.1:5432/tenantry_platform" };
  const at = new Date("2026-12-05T10:00:00Z");

  it("back every tier up daily at 03:00 UTC unless configured, spread over two hours", () => {
    const config = readPlatformConfig(url);
    expect(config.TENANTRY_BACKUP_SCHEDULE?.pattern).toBe("0 3 * * *");
    expect(config.TENANTRY_BACKUP_SCHEDULE?.slotAt(at)).toEqual({ start: new Date("2026-12-05T03:00:00Z"), end: new Date("2026-12-06T03:00:00Z") });
    expect(config.TENANTRY_BACKUP_SCHEDULE_PREMIUM).toBeUndefined();
    expect(config.TENANTRY_BACKUP_WINDOW_MS).toBe(2 * 3600 * 1000);
    expect(config).toMatchObject({ TENANTRY_BACKUP_KEEP_LAST: 7, TENANTRY_BACKUP_KEEP_DAYS: 30, TENANTRY_BACKUP_CONCURRENCY_PER_CLUSTER: 2 });
    expect(config.TENANTRY_BACKUP_VERIFY_SAMPLE).toEqual({ percent: 5 });
  });

  it("take a cron pattern per tier, or off", () => {
    const config = readPlatformConfig({ ...url, TENANTRY_BACKUP_SCHEDULE: "off", TENANTRY_BACKUP_SCHEDULE_ENTERPRISE: "0 */6 * * *", TENANTRY_BACKUP_SCHEDULE_STANDARD: " OFF " });
    expect(config.TENANTRY_BACKUP_SCHEDULE).toBeNull();
    expect(config.TENANTRY_BACKUP_SCHEDULE_STANDARD).toBeNull();
    expect(config.TENANTRY_BACKUP_SCHEDULE_ENTERPRISE?.slotAt(at)?.start).toEqual(new Date("2026-12-05T06:00:00Z"));
    expect(readPlatformConfig({ ...url, TENANTRY_BACKUP_SCHEDULE: "@weekly" }).TENANTRY_BACKUP_SCHEDULE?.slotAt(at)?.start).toEqual(new Date("2026-11-29T00:00:00Z"));
  });

  it("refuse at start a pattern that is not five cron fields, or never fires, naming the variable and what is wrong", () => {
    const cases: [string, string, RegExp][] = [
      ["TENANTRY_BACKUP_SCHEDULE", "0 3 * *", /exactly five, six, or seven space separated parts/],
      ["TENANTRY_BACKUP_SCHEDULE", "0 0 3 * * *", /requires exactly 5 parts/],
      ["TENANTRY_BACKUP_SCHEDULE_PREMIUM", "61 3 * * *", /Invalid value for minute: 61/],
      ["TENANTRY_BACKUP_SCHEDULE_ENTERPRISE", "daily", /exactly five/],
      ["TENANTRY_BACKUP_SCHEDULE_STANDARD", "0 0 30 2 *", /never fires/],
    ];
    for (const [name, value, cause] of cases) {
      let error: unknown;
      try {
        readPlatformConfig({ ...url, [name]: value });
      } catch (thrown) {
        error = thrown;
      }
      expect(error, value).toBeInstanceOf(ConfigError);
      const message = (error as Error).message;
      expect(message).toContain(`${name}: expected a cron pattern of five fields`);
      expect(message).toContain(`(got "${value}")`);
      expect(message).toMatch(cause);
    }
  });

  it("read the verification sample as a count or a share, and refuse anything else", () => {
    const sample = (value: string) => readPlatformConfig({ ...url, TENANTRY_BACKUP_VERIFY_SAMPLE: value }).TENANTRY_BACKUP_VERIFY_SAMPLE;
    expect(sample("3")).toEqual({ count: 3 });
    expect(sample("0")).toEqual({ count: 0 });
    expect(sample("12.5%")).toEqual({ percent: 12.5 });
    for (const value of ["-1", "150%", "half", "0.1"]) {
      expect(() => sample(value), value).toThrow(/TENANTRY_BACKUP_VERIFY_SAMPLE: expected a count of backups/);
    }
    expect(() => readPlatformConfig({ ...url, TENANTRY_BACKUP_KEEP_LAST: "0" })).toThrow(/TENANTRY_BACKUP_KEEP_LAST/);
    expect(() => readPlatformConfig({ ...url, TENANTRY_BACKUP_WINDOW_MS: "-5" })).toThrow(/TENANTRY_BACKUP_WINDOW_MS/);
  });
});

describe("backup pace", () => {
  const url = { TENANTRY_DATABASE_URL: "postgres://postgres@127.0.0.1:5432/tenantry_platform" };
  const rate = (value?: string) => readPlatformConfig({ ...url, ...(value === undefined ? {} : { TENANTRY_BACKUP_MAX_RATE: value }) }).TENANTRY_BACKUP_MAX_RATE;

  it("is 10 MB a second per core unless configured", () => {
    expect(rate()).toBeUndefined();
    expect(backupRateOf(rate(), 2)).toBe(25 * 1024 ** 2);
    expect(backupRateOf(rate(), 16)).toBe(200 * 1024 ** 2);
    expect(backupRateOf(rate("48MB"), 16)).toBe(48 * 1024 ** 2);
    expect(backupRateOf(rate("unlimited"), 2)).toBe(0);
  });

  it("reads a size per second in B, KB, MB or GB (powers of 1024), or 0 or unlimited for none", () => {
    expect(rate("48MB")).toBe(48 * 1024 ** 2);
    expect(rate(" 512kb/s ")).toBe(512 * 1024);
    expect(rate("1.5GB")).toBe(1.5 * 1024 ** 3);
    expect(rate("0")).toBe(0);
    expect(rate("Unlimited")).toBe(0);
  });

  it("refuses at start anything else, naming the variable", () => {
    for (const value of ["fast", "-1MB", "20", "20 MB per second"]) {
      expect(() => rate(value), value).toThrow(/TENANTRY_BACKUP_MAX_RATE: expected a size read per second such as 20MB/);
    }
  });
});

describe("move pace", () => {
  const url = { TENANTRY_DATABASE_URL: "postgres://postgres@127.0.0.1:5432/tenantry_platform" };
  const rate = (value?: string) => readPlatformConfig({ ...url, ...(value === undefined ? {} : { TENANTRY_MOVE_MAX_RATE: value }) }).TENANTRY_MOVE_MAX_RATE;

  it("is 3 MB a second unless configured, 0 for no limit", () => {
    expect(rate()).toBe(3 * 1024 ** 2);
    expect(rate("40MB/s")).toBe(40 * 1024 ** 2);
    expect(rate("unlimited")).toBe(0);
    expect(() => rate("fast")).toThrow(/TENANTRY_MOVE_MAX_RATE: expected a size/);
  });
});
