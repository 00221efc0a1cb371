import { describe, expect, it } from "vitest";
import { createLogger } from "./logger.ts";

/** The lines a logger writes, parsed. */
function capture(): { lines: Record<string, any>[]; write(line: string): void } {
  const lines: Record<string, any>[] = [];
  return { lines, write: (line) => lines.push(JSON.parse(line) as Record<string, any>) };
}

describe("logger", () => {
  it("redacts credentials under their usual names, up to three levels deep", () => {
    const out = capture();
    const log = createLogger("platform", "info", out);
    log.info({ password: "p1", storage: { credentials: { accessKeyId: "AKIAEXAMPLE", secretAccessKey: "s3-secret", sessionToken: "s3-session" } } }, "settings");
    log.info({ err: { token: "t1" } }, "failed");
    const text = JSON.stringify(out.lines);
    for (const secret of ["p1", "s3-secret", "s3-session", "t1"]) {
      expect(text).not.toContain(`"${secret}"`);
    }
    expect(out.lines[0]).toMatchObject({ service: "platform", password: "[redacted]", storage: { credentials: { accessKeyId: "AKIAEXAMPLE", secretAccessKey: "[redacted]", sessionToken: "[redacted]" } } });
  });
});
