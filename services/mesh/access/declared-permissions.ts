import { getOption, type DescService } from "@bufbuild/protobuf";
import { permissions, type Permission } from "../../../gen/tenantry/options/v1/access_pb.js";

export type { Permission };

/**
 * The permissions RPC services declare in their `tenantry.options.v1.permissions`
 * options, in the order declared (see {@link uniquePermissions}). This is
 * what a service publishes through DescribeSchema, and what its methods'
 * access rules may name.
 */
export function declaredPermissions(services: readonly DescService[]): Permission[] {
  return uniquePermissions(services.flatMap((service) => getOption(service, permissions)));
}

/** Each permission once, in order: a name declared again keeps its first declaration. */
export function uniquePermissions(declarations: Iterable<Permission>): Permission[] {
  const byName = new Map<string, Permission>();
  for (const permission of declarations) {
    if (!byName.has(permission.name)) {
      byName.set(permission.name, permission);
    }
  }
  return [...byName.values()];
}
