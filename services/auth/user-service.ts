import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { UserService, type UserSchema } from "../../gen/tenantry/auth/v1/user_service_pb.js";
import { entityManagerOf, readFieldMask, tenantOf, type RequestLedger } from "../mesh/index.ts";
import { changeableUserFields, createUser, deleteUser, getUser, listUsers, newUser, updateUser, type UserRecord } from "./users.ts";

export { UserService };

function toMessage(user: UserRecord): MessageInitShape<typeof UserSchema> {
  return { ...user, createTime: timestampFromDate(user.createTime), updateTime: timestampFromDate(user.updateTime) };
}

/**
 * `tenantry.auth.v1.UserService`: the tenant's users, in its own database;
 * a create with a request_id happens once, however often it is sent.
 */
export const userService = (requests: RequestLedger): ServiceImpl<typeof UserService> => ({
  async createUser(req, ctx) {
    const user = await newUser(req);
    return requests.createOnce(ctx, req, async (em) => ({ user: toMessage(await createUser(em, user, tenantOf(ctx).maxUsers)) }));
  },
  async getUser(req, ctx) {
    return { user: toMessage(await getUser(entityManagerOf(ctx), req.userId)) };
  },
  async listUsers(req, ctx) {
    const page = await listUsers(entityManagerOf(ctx), req);
    return { users: page.users.map(toMessage), nextPageToken: page.nextPageToken };
  },
  async updateUser(req, ctx) {
    const user = await updateUser(entityManagerOf(ctx), req.userId, { ...req, paths: readFieldMask(req.updateMask, changeableUserFields) });
    return { user: toMessage(user) };
  },
  async deleteUser(req, ctx) {
    await deleteUser(entityManagerOf(ctx), req.userId);
    return {};
  },
});
