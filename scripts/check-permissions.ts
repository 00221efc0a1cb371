// The permission rules of the contracts, checked by `npm run check` against
// the generated descriptors in gen/:
// - every permission a TENANT method's access rule names is declared by some
//   RPC service (option tenantry.options.v1.permissions), so that a tenant's
//   catalog can hold it and a role grant it;
// - each permission is declared once in the whole mesh;
// - a declared name is lower-case words joined by dots, such as
//   "entries.read", of at most 100 characters (what Auth's catalog holds);
// - a declaration names only default roles that exist.
import { getOption, type DescService } from "@bufbuild/protobuf";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { DefaultRole, permissions } from "../gen/tenantry/options/v1/access_pb.js";
import { accessOf, AccessKind } from "../services/mesh/index.ts";
import { contractServices } from "./contract-services.ts";

const permissionName = /^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$/;
const option = "(tenantry.options.v1.permissions)";

/** Checks the permission rules (see the head of this file) over `services`, and returns one message per broken rule; none when all hold. */
export function checkPermissions(services: readonly DescService[]): string[] {
  const problems: string[] = [];
  const declaredBy = new Map<string, string>();
  for (const service of services) {
    for (const permission of getOption(service, permissions)) {
      const where = `${service.typeName} declares permission "${permission.name}"`;
      const first = declaredBy.get(permission.name);
      if (first !== undefined) {
        problems.push(`${where}, which ${first} declares already: declare each permission once, on the RPC service that owns it`);
        continue;
      }
      declaredBy.set(permission.name, service.typeName);
      if (!permissionName.test(permission.name) || permission.name.length > 100) {
        problems.push(`${where}: a permission's name is lower-case words joined by dots, such as "entries.read", of at most 100 characters`);
      }
      if (permission.defaultRoles.includes(DefaultRole.UNSPECIFIED)) {
        problems.push(`${where} with default role DEFAULT_ROLE_UNSPECIFIED, which is no role: name admin, member or viewer (the owner holds every permission)`);
      }
    }
  }
  for (const service of services) {
    for (const method of service.methods) {
      const { kind, permission } = accessOf(method);
      if (kind === AccessKind.TENANT && permission !== "" && !declaredBy.has(permission)) {
        problems.push(
          `${service.typeName}/${method.name} needs permission "${permission}", which no service declares: no tenant's role could ever grant it; declare it with the ${option} option of the RPC service that owns it`,
        );
      }
    }
  }
  return problems;
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const problems = checkPermissions(await contractServices());
  if (problems.length > 0) {
    process.stderr.write(`${problems.join("\n")}\n${problems.length} permission rule(s) broken (see scripts/check-permissions.ts)\n`);
    process.exit(1);
  }
}
