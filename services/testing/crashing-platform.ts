// Platform as a process of its own that kills itself (SIGKILL, as `kill -9`)
// right after the step named by TENANTRY_TEST_CRASH_AFTER is done and
// before it is recorded: a provisioning step ("migrate-schemas"), a step of
// taking a backup ("backup:copy-tables"), or a restore's ("in_place:load",
// "clone:adopt", "undo:switch-back"), or a move's ("move:subscribe", or
// "move:copy-tables:copying" and "move:cutover:frozen" inside steps). For
// the crash tests.
import { runMain } from "../mesh/run-main.ts";

const crashAfter = process.env.TENANTRY_TEST_CRASH_AFTER;
const crashAt = (step: string) => {
  if (step === crashAfter) {
    process.kill(process.pid, "SIGKILL");
  }
};
await runMain("platform", async (log, telemetry) => {
  const { readPlatformConfig } = await import("../platform/config.ts");
  const { startPlatform } = await import("../platform/platform.ts");
  return startPlatform(readPlatformConfig(), log, telemetry, {
    afterStep: (_tenantId, step) => crashAt(step),
    afterBackupStep: (_backupId, step) => crashAt(`backup:${step}`),
    afterRestoreStep: (kind, _restoreId, step) => crashAt(`${kind}:${step}`),
    afterMoveStep: (_moveId, step) => crashAt(`move:${step}`),
  });
});
