import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthService } from "../../gen/tenantry/auth/v1/auth_service_pb.js";
import { RoleService } from "../../gen/tenantry/auth/v1/role_service_pb.js";
import { UserService } from "../../gen/tenantry/auth/v1/user_service_pb.js";
import type { TenantRoute } from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import { allPermissions, permissionsOfDefaultRole } from "../testing/declared-catalog.ts";
import { holdLock } from "../testing/held-lock.ts";
import { placements } from "../testing/placements.ts";
import { startSingleAuth, type SingleAuth } from "../testing/single-service.ts";
import { defaultRoles } from "./permission-catalog.ts";

let single: SingleAuth;
const password = "correct horse battery";

let auth: Client<typeof AuthService>;
let users: Client<typeof UserService>;
let roles: Client<typeof RoleService>;

beforeAll(async () => {
  single = await startSingleAuth();
  auth = single.client(AuthService);
  users = single.client(UserService);
  roles = single.client(RoleService);
});
afterAll(() => single?.stop());

async function code(call: Promise<unknown>): Promise<string> {
  return call.then(() => "ok", (e: unknown) => Code[ConnectError.from(e).code]);
}

// Each test runs against tenants of both placements, on the one Auth.
describe.each(placements)("users and roles ($name tenants)", ({ placement }) => {
  let tenantId: string;
  let ownerToken: string;
  beforeAll(async () => {
    // Its tier allows 6 users.
    ({ tenantId } = await single.createTenant({ tenantId: single.uniqueTenantId("people"), maxUsers: 6, ownerEmail: "owner@example.com", ownerPassword: password, placement }));
    ownerToken = await login("owner@example.com");
  });

  const as = (token: string) => ({ headers: { "x-tenant-id": tenantId, authorization: `Bearer ${token}` } });
  async function login(email: string): Promise<string> {
    return (await auth.login({ email, password }, { headers: { "x-tenant-id": tenantId } })).accessToken;
  }

  it("manages users: case-insensitive emails, roles, the last owner, and the tier's user limit", async () => {
    const { user } = await users.createUser({ email: "Casey@Example.com", password, displayName: "Casey", roles: ["member"] }, as(ownerToken));
    expect(user).toMatchObject({ email: "Casey@Example.com", displayName: "Casey", roles: ["member"] });
    expect(await code(users.createUser({ email: "casey@example.COM", password }, as(ownerToken)))).toBe("AlreadyExists");
    expect(await code(users.createUser({ email: "x@example.com", password, roles: ["pope"] }, as(ownerToken)))).toBe("InvalidArgument");
    expect(await code(users.createUser({ email: "x@example.com", password: "short" }, as(ownerToken)))).toBe("InvalidArgument");

    const who = await auth.whoAmI({}, as(await login("casey@example.com")));
    expect(who).toMatchObject({ email: "Casey@Example.com", tenantId, roles: ["member"], permissions: permissionsOfDefaultRole("member") });

    const owner = (await auth.whoAmI({}, as(ownerToken))).userId;
    expect(await code(users.deleteUser({ userId: owner }, as(ownerToken)))).toBe("FailedPrecondition");
    expect(await code(roles.revokeRole({ userId: owner, role: "owner" }, as(ownerToken)))).toBe("FailedPrecondition");
    expect(await code(users.updateUser({ userId: owner, roles: ["member"], updateMask: { paths: ["roles"] } }, as(ownerToken)))).toBe("FailedPrecondition");

    // The tier allows 6 users here: the owner, Casey, and others up to the limit.
    const count = async () => (await users.listUsers({}, as(ownerToken))).users.length;
    while ((await count()) < 6) {
      await users.createUser({ email: `filler-${await count()}@example.com`, password }, as(ownerToken));
    }
    const full = await users.createUser({ email: "one-too-many@example.com", password }, as(ownerToken)).catch((e: unknown) => ConnectError.from(e));
    expect((full as ConnectError).code).toBe(Code.ResourceExhausted);
    await users.deleteUser({ userId: user!.userId }, as(ownerToken));
    expect(await code(users.createUser({ email: "one-too-many@example.com", password }, as(ownerToken)))).toBe("ok");
    expect(await code(users.getUser({ userId: user!.userId }, as(ownerToken)))).toBe("NotFound");

    const first = await users.listUsers({ pageSize: 4 }, as(ownerToken));
    const second = await users.listUsers({ pageSize: 4, pageToken: first.nextPageToken }, as(ownerToken));
    const emails = [...first.users, ...second.users].map((u) => u.email.toLowerCase());
    expect(emails).toEqual([...emails].sort());
    expect(new Set(emails).size).toBe(6);
  });

  it("manages roles of the tenant's own, leaving the default ones alone", async () => {
    const { role } = await roles.createRole({ name: "auditor", description: "reads", permissions: ["entries.read", "users.read"] }, as(ownerToken));
    expect(role).toMatchObject({ name: "auditor", permissions: ["entries.read", "users.read"], builtin: false });
    expect(await code(roles.createRole({ name: "auditor" }, as(ownerToken)))).toBe("AlreadyExists");
    expect(await code(roles.createRole({ name: "x", permissions: ["root"] }, as(ownerToken)))).toBe("InvalidArgument");
    expect(await code(roles.updateRole({ name: "viewer", permissions: [], updateMask: { paths: ["permissions"] } }, as(ownerToken)))).toBe("FailedPrecondition");
    expect(await code(roles.deleteRole({ name: "owner" }, as(ownerToken)))).toBe("FailedPrecondition");
    const updated = await roles.updateRole({ name: "auditor", permissions: ["entries.read"], updateMask: { paths: ["permissions"] } }, as(ownerToken));
    expect(updated.role?.permissions).toEqual(["entries.read"]);
    const { permissions } = await roles.listPermissions({}, as(ownerToken));
    expect(permissions.map((p) => p.name)).toEqual([...allPermissions].sort());
    await roles.deleteRole({ name: "auditor" }, as(ownerToken));
    expect((await roles.listRoles({}, as(ownerToken))).roles.map((r) => r.name)).toEqual(Object.keys(defaultRoles).sort());
  });
});

describe.each(placements)("retried user creates ($name tenants)", ({ placement }) => {
  interface OwnedTenant {
    route: TenantRoute;
    /** Call options as the tenant's owner. */
    asOwner: { headers: Record<string, string> };
  }
  // Tenants of their own: the other tests count the first tenant's users.
  async function ownedTenant(): Promise<OwnedTenant> {
    const route = await single.createTenant({ tenantId: single.uniqueTenantId("retries"), ownerEmail: "owner@example.com", ownerPassword: password, placement });
    const token = (await auth.login({ email: "owner@example.com", password }, { headers: { "x-tenant-id": route.tenantId } })).accessToken;
    return { route, asOwner: { headers: { "x-tenant-id": route.tenantId, authorization: `Bearer ${token}` } } };
  }
  let other: OwnedTenant;
  const count = async (table: string) => Number((await single.sqlAs<{ n: string }>(other.route, `select count(*) as n from ${table}`))[0]!.n);

  beforeAll(async () => {
    other = await ownedTenant();
  });

  it("answers a repeat of a request_id with the first user and keeps no password with the id", async () => {
    const request = { email: "repeat@example.com", password, displayName: "Repeat", roles: ["member"], requestId: randomUUID() };
    const first = await users.createUser(request, other.asOwner);
    expect(await users.createUser(request, other.asOwner)).toEqual(first);
    const [row] = await single.sqlAs<{ fingerprint: Buffer; response: Buffer }>(other.route, "select fingerprint, response from request_ids where request_id = $1", [
      request.requestId,
    ]);
    expect(row!.fingerprint).toHaveLength(32);
    expect(row!.response.includes(Buffer.from(password))).toBe(false);
    expect(row!.response.includes(Buffer.from("repeat@example.com"))).toBe(true);

    // The password is part of the request: another one with the same id is another request.
    expect(await code(users.createUser({ ...request, password: `${password}!` }, other.asOwner))).toBe("AlreadyExists");
    expect(await code(users.createUser({ ...request, roles: ["viewer"] }, other.asOwner))).toBe("AlreadyExists");
    expect(await code(users.createUser({ ...request, requestId: "nope" }, other.asOwner))).toBe("InvalidArgument");
    expect(await single.sqlAs(other.route, "select 1 from users where lower(email) = 'repeat@example.com'")).toHaveLength(1);
    expect(await count("request_ids")).toBe(1);
  });

  it("makes a repeat sent while the first call runs wait for it and answer the same", async () => {
    const before = await count("users");
    // The key Auth locks user creation with, of the tenant's own schema (a pool database holds other tenants').
    const lock = await holdLock(single.databaseUrl(other.route.database), `select pg_advisory_xact_lock(hashtext('tenantry.${other.route.schemaPrefix}auth.users'))`);
    const request = { email: "together@example.com", password, requestId: randomUUID() };
    const calls = [users.createUser(request, other.asOwner), users.createUser(request, other.asOwner)];
    // One call has recorded the id and waits for its turn to create; the other waits on the id.
    await lock.waitingFor([/pg_advisory_xact_lock/, /request_ids/]);
    await lock.release();
    const [a, b] = await Promise.all(calls);
    expect(a).toEqual(b);
    expect(await count("users")).toBe(before + 1);
  });

  it("keeps no request_id of a failed create, so a corrected request may use it", async () => {
    const requestId = randomUUID();
    expect(await code(users.createUser({ email: "later@example.com", password, roles: ["pope"], requestId }, other.asOwner))).toBe("InvalidArgument");
    expect(await code(users.createUser({ email: "owner@example.com", password, requestId }, other.asOwner))).toBe("AlreadyExists");
    expect(await single.sqlAs(other.route, "select 1 from request_ids where request_id = $1", [requestId])).toEqual([]);
    const corrected = await users.createUser({ email: "later@example.com", password, roles: ["member"], requestId }, other.asOwner);
    expect(corrected.user?.roles).toEqual(["member"]);
  });

  it("keeps each tenant's request_ids apart, and creates on every call without one", async () => {
    const third = await ownedTenant();
    const requestId = randomUUID();
    const here = await users.createUser({ email: "both@example.com", password, requestId }, other.asOwner);
    const there = await users.createUser({ email: "both@example.com", password, requestId }, third.asOwner);
    expect(there.user?.userId).not.toBe(here.user?.userId);

    const first = await users.createUser({ email: "twice@example.com", password }, third.asOwner);
    expect(first.user?.email).toBe("twice@example.com");
    expect(await code(users.createUser({ email: "twice@example.com", password }, third.asOwner))).toBe("AlreadyExists");
  });
});
