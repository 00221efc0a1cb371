import { ConnectError } from "@connectrpc/connect";
import { MoveMode } from "../../../gen/tenantry/platform/v1/move_pb.js";
import { Placement } from "../../../gen/tenantry/platform/v1/platform_service_pb.js";
import type { Logger } from "../../mesh/index.ts";
import type { PlacementName } from "../config.ts";
import type { Move } from "../entities/move.ts";
import type { Tenant } from "../entities/tenant.ts";
import { placementNames } from "../stores/index.ts";
import type { TenantMoves } from "./tenant-moves.ts";

/** Options of {@link TierChangeMoves}. */
export interface TierChangeMovesOptions {
  moves: TenantMoves;
  /** Each tier's default placement (TENANTRY_TIER_PLACEMENTS); a tier not named is dedicated. */
  tierPlacements: ReadonlyMap<string, PlacementName>;
  /** Whether a tier change starts a move at all (TENANTRY_TIER_CHANGE_MOVES). */
  enabled: boolean;
  log: Logger;
}

/**
 * Moves a tenant whose tier changed to the new tier's default placement,
 * on its own cluster: a pooled tenant that becomes PREMIUM gets a
 * database of its own, say.
 */
export class TierChangeMoves {
  readonly #options: TierChangeMovesOptions;

  constructor(options: TierChangeMovesOptions) {
    this.#options = options;
  }

  /**
   * Starts the move of `tenant` (its tier just changed) when its tier's
   * placement differs from its own, and drives it to its end in the
   * background (a Platform that stops goes on with it when it starts
   * again); resolves with the move as started, or undefined when none is
   * needed or moves on tier changes are off. A move that cannot start (the
   * tenant is not ACTIVE, a move of it is under way, or the placement
   * cannot be reached that way) is logged and left to MoveTenant: the tier
   * changes all the same.
   */
  async afterTierChange(tenant: Tenant): Promise<Move | undefined> {
    const { moves, tierPlacements, enabled, log } = this.#options;
    const wanted = tierPlacements.get(tenant.tier) ?? placementNames.dedicated;
    if (!enabled || wanted === tenant.placement || tenant.cluster == null) {
      return undefined;
    }
    let move: Move;
    try {
      move = await moves.start({
        tenantId: tenant.id,
        targetCluster: tenant.cluster,
        mode: MoveMode.AUTO,
        compareDigests: false,
        targetPlacement: wanted === placementNames.pooled ? Placement.POOLED : Placement.DEDICATED,
      });
    } catch (error) {
      log.warn({ tenantId: tenant.id, tier: tenant.tier, placement: wanted, reason: ConnectError.from(error).rawMessage }, "the tier changed but its placement's move could not start; MoveTenant can move the tenant");
      return undefined;
    }
    moves.follow(move.id).catch((error: unknown) => log.warn({ moveId: move.id, tenantId: tenant.id, reason: ConnectError.from(error).rawMessage }, "a tier change's move did not succeed"));
    return move;
  }
}
