import type { MigrationObject } from "@mikro-orm/core";
import { AddBackupTableCount } from "./add-backup-table-count.ts";
import { AddBackupSchedules } from "./add-backup-schedules.ts";
import { AddBackups } from "./add-backups.ts";
import { AddClustersAndCredentials } from "./add-clusters-and-credentials.ts";
import { AddFleetLedger } from "./add-fleet-ledger.ts";
import { AddLifecycleAndAudit } from "./add-lifecycle-and-audit.ts";
import { AddMoves } from "./add-moves.ts";
import { AddMovePlacements } from "./add-move-placements.ts";
import { AddPlacementCounts } from "./add-placement-counts.ts";
import { AddPlacements } from "./add-placements.ts";
import { AddPooledRestores } from "./add-pooled-restores.ts";
import { AddPoolCapacity } from "./add-pool-capacity.ts";
import { AddPermissionCatalog } from "./add-permission-catalog.ts";
import { AddTenantOwner } from "./add-tenant-owner.ts";
import { AddWriteFreezes } from "./add-write-freezes.ts";
import { CreateRegistry } from "./create-registry.ts";
import { RemoveFullPoolState } from "./remove-full-pool-state.ts";

/** Platform's migrations of its own database, oldest first. Names never change once released. */
export const migrations: MigrationObject[] = [
  { name: "0001-create-registry", class: CreateRegistry },
  { name: "0002-add-clusters-and-credentials", class: AddClustersAndCredentials },
  { name: "0003-add-lifecycle-and-audit", class: AddLifecycleAndAudit },
  { name: "0004-add-fleet-ledger", class: AddFleetLedger },
  { name: "0005-add-tenant-owner", class: AddTenantOwner },
  { name: "0006-add-permission-catalog", class: AddPermissionCatalog },
  { name: "0007-add-backups", class: AddBackups },
  { name: "0008-add-backup-table-count", class: AddBackupTableCount },
  { name: "0009-add-backup-schedules", class: AddBackupSchedules },
  { name: "0010-add-write-freezes", class: AddWriteFreezes },
  { name: "0011-add-moves", class: AddMoves },
  { name: "0012-add-placements", class: AddPlacements },
  { name: "0013-add-pooled-restores", class: AddPooledRestores },
  { name: "0014-add-move-placements", class: AddMovePlacements },
  { name: "0015-add-pool-capacity", class: AddPoolCapacity },
  { name: "0016-remove-full-pool-state", class: RemoveFullPoolState },
  { name: "0017-add-placement-counts", class: AddPlacementCounts },
];
