import { contractServices } from "../../scripts/contract-services.ts";
import { defaultRolesOf, ownerRole } from "../auth/permission-catalog.ts";
import { declaredPermissions } from "../mesh/index.ts";

/** Every permission the contracts declare, whichever service declares it: the catalog of a mesh that runs them all. */
export const declaredCatalog = declaredPermissions(await contractServices());

/** The names of every permission the contracts declare. */
export const allPermissions = declaredCatalog.map((p) => p.name);

/** The names of the permissions a default role holds in a tenant bootstrapped with {@link declaredCatalog}, in order. */
export function permissionsOfDefaultRole(role: string): string[] {
  return declaredCatalog
    .filter((p) => role === ownerRole || defaultRolesOf(p).includes(role))
    .map((p) => p.name)
    .sort();
}
