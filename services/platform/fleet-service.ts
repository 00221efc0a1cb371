import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { FleetService } from "../../gen/tenantry/platform/v1/fleet_service_pb.js";
import type { FleetMigrations } from "./fleet/index.ts";

export { FleetService };

/** `tenantry.platform.v1.FleetService` over the fleet's ledger. */
export function fleetService(fleet: FleetMigrations): ServiceImpl<typeof FleetService> {
  return {
    async *migrateTenants(req, ctx) {
      yield* fleet.migrate(req, ctx.signal);
    },
    async getFleetStatus() {
      const services = await fleet.status();
      return {
        services: services.map((s) => ({
          ...s,
          failedTenants: s.failedTenants.map((f) => ({ ...f, attemptTime: timestampFromDate(f.attemptedAt) })),
        })),
      };
    },
  };
}
