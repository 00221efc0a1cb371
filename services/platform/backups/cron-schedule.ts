import { Cron } from "croner";

/** One run of a schedule: from when its pattern fired to when it fires next. */
export interface ScheduleSlot {
  start: Date;
  end: Date;
}

/**
 * A five-field cron pattern (minute, hour, day of month, month, day of
 * week; or a nickname such as `@daily`), read in UTC, through croner. Only
 * its times are asked of it: it starts no timer.
 */
export class CronSchedule {
  readonly pattern: string;
  readonly #cron: Cron;

  /** Throws an Error saying what is wrong with `pattern`, also when it never fires. */
  constructor(pattern: string) {
    this.pattern = pattern.trim();
    this.#cron = new Cron(this.pattern, { timezone: "UTC", mode: "5-part" });
    if (this.#cron.nextRun(new Date()) === null) {
      throw new Error("the pattern never fires");
    }
  }

  /** The slot `now` is in: the last time the pattern fired, at or before `now`, and the next time. */
  slotAt(now: Date): ScheduleSlot | undefined {
    // croner's previous runs are strictly before the reference, to the second.
    const start = this.#cron.previousRuns(2, new Date(now.getTime() + 1000)).find((fired) => fired.getTime() <= now.getTime());
    const end = start === undefined ? null : this.#cron.nextRun(start);
    return start === undefined || end === null ? undefined : { start, end };
  }
}
