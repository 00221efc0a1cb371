export { ClusterDrain, DrainEvent, type ClusterDrainOptions, type DrainProgress, type DrainRequest, type DrainTotals } from "./cluster-drain.ts";
export { moveIdOf, replicationPrefix } from "./logical-replication.ts";
export { moveSteps, requested, rollingBack, type MoveStep } from "./move-steps.ts";
export { onlineMoveSupport, type OnlineMoveSupport } from "./online-move-support.ts";
export { TenantMoves, type MoveRequest, type TenantMovesOptions } from "./tenant-moves.ts";
export { TierChangeMoves, type TierChangeMovesOptions } from "./tier-change-moves.ts";
export { ServiceWriteFreeze, SessionWriteFreeze, type FreezeHolder, type FrozenTenant, type Release, type WriteFreeze } from "./write-freeze.ts";
