import type { ServiceImpl } from "@connectrpc/connect";
import { RoleService } from "../../gen/tenantry/auth/v1/role_service_pb.js";
import { entityManagerOf, readFieldMask } from "../mesh/index.ts";
import { changeableRoleFields, createRole, deleteRole, listPermissions, listRoles, setRole, updateRole } from "./roles.ts";

export { RoleService };

/** `tenantry.auth.v1.RoleService`: the tenant's roles and who holds them. */
export const roleService: ServiceImpl<typeof RoleService> = {
  async createRole(req, ctx) {
    return { role: await createRole(entityManagerOf(ctx), req) };
  },
  async listRoles(_req, ctx) {
    return { roles: await listRoles(entityManagerOf(ctx)) };
  },
  async updateRole(req, ctx) {
    return { role: await updateRole(entityManagerOf(ctx), req.name, { ...req, paths: readFieldMask(req.updateMask, changeableRoleFields) }) };
  },
  async deleteRole(req, ctx) {
    await deleteRole(entityManagerOf(ctx), req.name);
    return {};
  },
  async assignRole(req, ctx) {
    await setRole(entityManagerOf(ctx), req.userId, req.role, true);
    return {};
  },
  async revokeRole(req, ctx) {
    await setRole(entityManagerOf(ctx), req.userId, req.role, false);
    return {};
  },
  async listPermissions(_req, ctx) {
    return { permissions: await listPermissions(entityManagerOf(ctx)) };
  },
};
