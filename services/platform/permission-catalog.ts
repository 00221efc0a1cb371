import { createHash } from "node:crypto";
import { BackupService } from "../../gen/tenantry/platform/v1/backup_service_pb.js";
import { ClusterService } from "../../gen/tenantry/platform/v1/cluster_service_pb.js";
import { FleetService } from "../../gen/tenantry/platform/v1/fleet_service_pb.js";
import { MoveService } from "../../gen/tenantry/platform/v1/move_service_pb.js";
import { PlatformService } from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import { TenantBackupService } from "../../gen/tenantry/selfserve/v1/tenant_backup_service_pb.js";
import { declaredPermissions, uniquePermissions, type Permission } from "../mesh/index.ts";

/** The permissions every data-owning service declares, as Platform hands them to Auth. */
export interface PermissionCatalog {
  /** Each permission once, services in the registry's order, each service's in the order it declares them. */
  permissions: Permission[];
  /**
   * Names what a tenant's catalog holds once these are merged into it: the
   * names and descriptions, in any order. Default roles are left out: they
   * matter only when a permission first reaches a tenant.
   */
  digest: string;
}

/**
 * The catalog made of what each service declares (services in the
 * registry's order). A name two services declare keeps the first one's
 * declaration; `npm run check` refuses that among the contracts in proto/.
 */
export function permissionCatalogOf(services: Iterable<{ permissions: readonly Permission[] }>): PermissionCatalog {
  const permissions = uniquePermissions([...services].flatMap((s) => s.permissions));
  const merged = permissions.map((p) => [p.name, p.description]).sort(([a], [b]) => (a! < b! ? -1 : 1));
  return { permissions, digest: createHash("sha256").update(JSON.stringify(merged)).digest("hex") };
}

/**
 * What Platform itself declares: the permissions of its own tenant methods
 * (TenantBackupService's "backups.manage"), declared on its RPC services as
 * every service declares its own.
 */
export const platformDeclarations = {
  permissions: declaredPermissions([PlatformService, ClusterService, FleetService, BackupService, MoveService, TenantBackupService]),
};

/**
 * The catalog Platform hands Auth: its own declarations first (Platform
 * comes first in the registry), then those of every data-owning service,
 * as they describe themselves.
 */
export function meshCatalogOf(services: Iterable<{ permissions: readonly Permission[] }>): PermissionCatalog {
  return permissionCatalogOf([platformDeclarations, ...services]);
}
