import type { Command } from "commander";
import { GetFleetStatusResponseSchema } from "../../gen/tenantry/platform/v1/fleet_service_pb.js";
import { timeLabel } from "./output.ts";
import { withPlatform } from "./platform-session.ts";

/** Adds `fleet status`. */
export function addFleetCommand(program: Command): void {
  const fleet = program.command("fleet").description("where the fleet's schemas stand");

  fleet
    .command("status")
    .description("per service: the newest schema version and how many tenants are current, behind or failed (from the ledger; no tenant is contacted)")
    .action((_options: object, command: Command) =>
      withPlatform(command, async ({ fleet, output, call }) => {
        const response = await fleet.getFleetStatus({}, call);
        output.result(GetFleetStatusResponseSchema, response, () => {
          output.table(
            ["SERVICE", "LATEST", "CURRENT", "BEHIND", "FAILED"],
            response.services.map((s) => [s.service, s.latestVersion, String(s.current), String(s.behind), String(s.failed)]),
            "no services",
          );
          const failed = response.services.flatMap((s) =>
            s.failedTenants.map((f) => [f.tenantId, s.service, f.version, String(f.attempts), timeLabel(f.attemptTime), f.error]),
          );
          if (failed.length > 0) {
            output.line("");
            output.table(["TENANT", "SERVICE", "AT VERSION", "ATTEMPTS", "LAST ATTEMPT", "ERROR"], failed, "");
          }
        });
      }),
    );
}
