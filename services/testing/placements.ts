import { Placement } from "../../gen/tenantry/platform/v1/platform_service_pb.js";

/**
 * Both placements, for specs whose tests run against tenants of either, on
 * the same started service: `describe.each(placements)("… ($name tenants)",
 * ({ placement }) => …)`.
 */
export const placements = [
  { name: "dedicated", placement: Placement.DEDICATED },
  { name: "pooled", placement: Placement.POOLED },
] as const;
