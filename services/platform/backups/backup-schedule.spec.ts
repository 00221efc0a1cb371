import { describe, expect, it } from "vitest";
import { sampleSize, scheduledLabel, spreadOffset } from "./backup-schedule.ts";
import { CronSchedule } from "./cron-schedule.ts";

describe("a schedule's slots", () => {
  it("begin when the pattern fires and end when it fires next, read in UTC", () => {
    const daily = new CronSchedule("0 3 * * *");
    expect(daily.slotAt(new Date("2026-12-05T03:00:00.000Z"))).toEqual({ start: new Date("2026-12-05T03:00:00Z"), end: new Date("2026-12-06T03:00:00Z") });
    expect(daily.slotAt(new Date("2026-12-05T02:59:59.999Z"))?.start).toEqual(new Date("2026-12-04T03:00:00Z"));
    expect(new CronSchedule("*/15 * * * *").slotAt(new Date("2026-12-05T10:29:59Z"))).toEqual({ start: new Date("2026-12-05T10:15:00Z"), end: new Date("2026-12-05T10:30:00Z") });
  });

  it("are named in the label of the backups taken for them", () => {
    expect(scheduledLabel({ start: new Date("2026-12-05T03:00:00Z"), end: new Date("2026-12-06T03:00:00Z") })).toBe("scheduled 2026-12-05T03:00:00.000Z");
  });
});

describe("spreading a slot's backups", () => {
  const window = 2 * 3600 * 1000;
  const tenants = Array.from({ length: 400 }, (_, i) => `tenant-${i}`);

  it("gives each tenant the same time in every slot, within the window", () => {
    for (const tenant of tenants) {
      const offset = spreadOffset(tenant, window);
      expect(offset).toBe(spreadOffset(tenant, window));
      expect(offset).toBeGreaterThanOrEqual(0);
      expect(offset).toBeLessThan(window);
    }
    expect(spreadOffset("acme", 0)).toBe(0);
  });

  it("spreads tenants evenly: each quarter of the window gets about a quarter of them", () => {
    const quarters = [0, 0, 0, 0];
    for (const tenant of tenants) {
      quarters[Math.floor(spreadOffset(tenant, window) / (window / 4))]! += 1;
    }
    for (const count of quarters) {
      expect(count).toBeGreaterThan(70);
      expect(count).toBeLessThan(130);
    }
  });
});

describe("the verification sample", () => {
  it("is a count, at most every backup of the slot", () => {
    expect(sampleSize({ count: 3 }, 10)).toBe(3);
    expect(sampleSize({ count: 3 }, 2)).toBe(2);
    expect(sampleSize({ count: 0 }, 10)).toBe(0);
  });

  it("or a share, rounded up so that a slot with backups verifies at least one", () => {
    expect(sampleSize({ percent: 5 }, 100)).toBe(5);
    expect(sampleSize({ percent: 5 }, 3)).toBe(1);
    expect(sampleSize({ percent: 5 }, 0)).toBe(0);
    expect(sampleSize({ percent: 100 }, 7)).toBe(7);
    expect(sampleSize({ percent: 0 }, 7)).toBe(0);
  });
});
