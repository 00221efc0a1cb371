import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  Tier,
  TenantStatus,
  type TenantRouteSchema,
  type TenantSchema,
} from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import type { Cluster } from "./platform-database.ts";
import type { Tenant } from "./entities/tenant.ts";

/** The registry's spelling of a tier: the enum name without prefix, lower-case. */
export function tierName(tier: Tier): string {
  return Tier[tier].toLowerCase();
}

/** The registry's spelling of a status. */
export function statusName(status: TenantStatus): string {
  return TenantStatus[status].toLowerCase();
}

function tierOf(name: string): Tier {
  return Tier[name.toUpperCase() as keyof typeof Tier] ?? Tier.UNSPECIFIED;
}

function statusOf(name: string): TenantStatus {
  return TenantStatus[name.toUpperCase() as keyof typeof TenantStatus] ?? TenantStatus.UNSPECIFIED;
}

/** A registry record as the API's Tenant message. */
export function tenantMessage(tenant: Tenant): MessageInitShape<typeof TenantSchema> {
  return {
    tenantId: tenant.id,
    displayName: tenant.displayName,
    tier: tierOf(tenant.tier),
    status: statusOf(tenant.status),
    database: tenant.database,
    createTime: timestampFromDate(tenant.createdAt),
    error: tenant.error ?? "",
  };
}

/** The route services use to reach a tenant's database. */
export function routeMessage(tenant: Tenant, cluster: Cluster): MessageInitShape<typeof TenantRouteSchema> {
  return {
    tenantId: tenant.id,
    status: statusOf(tenant.status),
    tier: tierOf(tenant.tier),
    host: cluster.host,
    port: cluster.port,
    database: tenant.database,
    user: cluster.user,
    password: cluster.password,
  };
}

/** Checks a tier from a request; UNSPECIFIED means STANDARD. */
export function checkTier(tier: Tier): Tier {
  if (tier === Tier.UNSPECIFIED) {
    return Tier.STANDARD;
  }
  if (Tier[tier] === undefined) {
    throw new ConnectError(`unknown tier ${tier}: use TIER_STANDARD, TIER_PREMIUM or TIER_ENTERPRISE`, Code.InvalidArgument);
  }
  return tier;
}
