import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { MovePlacement, type MoveSchema } from "../../gen/tenantry/platform/v1/move_pb.js";
import { Placement, Tier, type TenantRouteSchema, type TenantSchema } from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import type { ClusterAccess } from "./cluster-registry.ts";
import type { Move } from "./entities/move.ts";
import type { Tenant } from "./entities/tenant.ts";
import { offboardingSteps } from "./lifecycle/offboarding-steps.ts";
import { moveModeOf, moveStateOf, placementNames, statusNames, statusOf, tierOf } from "./stores/index.ts";

/** A move's record as the API's Move message. */
export function moveMessage(move: Move): MessageInitShape<typeof MoveSchema> {
  const duration = (ms: number) => ({ seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 });
  return {
    moveId: move.id,
    tenantId: move.tenantId,
    mode: moveModeOf(move.mode),
    state: moveStateOf(move.state),
    step: move.step,
    error: move.error ?? "",
    sourceCluster: move.sourceCluster,
    sourceDatabase: move.sourceDatabase,
    targetCluster: move.targetCluster,
    targetDatabase: move.targetDatabase,
    tablesCopied: move.tablesCopied,
    tableCount: move.tableCount,
    compareDigests: move.compareDigests,
    ...(move.freezeMs == null ? {} : { writeFreeze: duration(move.freezeMs) }),
    createTime: timestampFromDate(move.createdAt),
    ...(move.switchedAt == null ? {} : { switchTime: timestampFromDate(move.switchedAt) }),
    ...(move.finishedAt == null ? {} : { finishTime: timestampFromDate(move.finishedAt) }),
    ...(move.keepUntil == null ? {} : { sourceDropTime: timestampFromDate(move.keepUntil) }),
    sourceDropped: move.sourceDropped,
    sourcePlacement: movePlacementOf(move.sourcePlacement),
    targetPlacement: movePlacementOf(move.targetPlacement),
  };
}

/** A placement as a move records it, in the API. */
function movePlacementOf(placement: string): MovePlacement {
  return placement === placementNames.pooled ? MovePlacement.POOLED : MovePlacement.DEDICATED;
}

/** A registry record as the API's Tenant message, with its move under way if there is one. */
export function tenantMessage(tenant: Tenant, move?: Move | null): MessageInitShape<typeof TenantSchema> {
  return {
    tenantId: tenant.id,
    displayName: tenant.displayName,
    tier: tierOf(tenant.tier),
    status: statusOf(tenant.status),
    database: tenant.database,
    placement: placementOf(tenant.placement),
    createTime: timestampFromDate(tenant.createdAt),
    updateTime: timestampFromDate(tenant.updatedAt),
    error: tenant.error ?? "",
    cluster: tenant.cluster ?? "",
    suspendedReason: tenant.suspendedReason ?? "",
    exportPath: tenant.exportPath ?? "",
    // Chosen before it is taken: shown once taken.
    finalBackupId: tenant.finalBackupId != null && tenant.lifecycleStep !== offboardingSteps[0] ? tenant.finalBackupId : "",
    ...(tenant.status === statusNames.offboarding && tenant.purgeAfter != null ? { purgeTime: timestampFromDate(tenant.purgeAfter) } : {}),
    ...(move == null ? {} : { move: moveMessage(move) }),
  };
}

/** A recorded placement as the API's. */
export function placementOf(name: string): Placement {
  return name === placementNames.pooled ? Placement.POOLED : Placement.DEDICATED;
}

/** What a tier allows; 0 means no limit. */
export interface TierLimit {
  maxUsers: number;
  maxStorageBytes: number;
}

/**
 * The route services use to reach a tenant's data: a dedicated tenant's
 * database as its own role; a pooled tenant's schemas through its pool
 * database's `login`, taking on the tenant's role for each call.
 */
export function routeMessage(
  tenant: Tenant,
  cluster: ClusterAccess,
  login: { user: string; password: string },
  limits: Map<string, TierLimit>,
): MessageInitShape<typeof TenantRouteSchema> {
  const pooled = tenant.placement === placementNames.pooled;
  const limit = limits.get(tenant.tier);
  return {
    tenantId: tenant.id,
    status: statusOf(tenant.status),
    tier: tierOf(tenant.tier),
    host: cluster.host,
    port: cluster.port,
    database: tenant.database,
    user: login.user,
    password: login.password,
    maxUsers: limit?.maxUsers ?? 0,
    maxStorageBytes: BigInt(limit?.maxStorageBytes ?? 0),
    placement: placementOf(tenant.placement),
    sessionRole: pooled ? (tenant.role ?? "") : "",
    // Dedicated: each service's schema is named after the service.
    schemaPrefix: tenant.schemaPrefix,
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
