import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthService } from "../../gen/tenantry/auth/v1/auth_service_pb.js";
import { Placement } from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import { UserService } from "../../gen/tenantry/auth/v1/user_service_pb.js";
import { permissionsOfDefaultRole } from "../testing/declared-catalog.ts";
import { startSingleAuth, type SingleAuth } from "../testing/single-service.ts";

/** Auth's own code serving pooled tenants (schemas in one pool database). */
let single: SingleAuth;
let auth: Client<typeof AuthService>;
let users: Client<typeof UserService>;
beforeAll(async () => {
  single = await startSingleAuth();
  auth = single.client(AuthService);
  users = single.client(UserService);
});
afterAll(() => single?.stop());

const pooled = { placement: Placement.POOLED };
const email = "owner@example.com";

async function code(call: Promise<unknown>): Promise<string> {
  return call.then(
    () => "ok",
    (e: unknown) => Code[ConnectError.from(e).code],
  );
}

describe("auth with pooled tenants", () => {
  it("bootstraps, signs in and checks tokens per pooled tenant: the same email in two tenants of one pool database is two users", async () => {
    const a = await single.createTenant({ ...pooled, ownerEmail: email, ownerPassword: "password of a, long" });
    const b = await single.createTenant({ ...pooled, ownerEmail: email, ownerPassword: "password of b, long" });
    expect(a.database).toBe(b.database);
    const tokenA = (await auth.login({ email, password: "password of a, long" }, { headers: { "x-tenant-id": a.tenantId } })).accessToken;
    expect(await code(auth.login({ email, password: "password of a, long" }, { headers: { "x-tenant-id": b.tenantId } }))).toBe("Unauthenticated");
    const who = await auth.whoAmI({}, { headers: { "x-tenant-id": a.tenantId, authorization: `Bearer ${tokenA}` } });
    expect(who).toMatchObject({ email, tenantId: a.tenantId, roles: ["owner"], permissions: permissionsOfDefaultRole("owner") });
    // a's token is a's: b refuses it.
    expect(await code(auth.whoAmI({}, { headers: { "x-tenant-id": b.tenantId, authorization: `Bearer ${tokenA}` } }))).toBe("PermissionDenied");
    for (const t of [a, b]) {
      expect(await single.sqlAs(t, "select count(*)::int as n from users")).toEqual([{ n: 1 }]);
      expect(await single.sqlAs(t, "select count(*)::int as n from signing_keys")).toEqual([{ n: 1 }]);
    }
  });

  it("holds each pooled tenant to its user limit under concurrent creates, with a lock of its own schema", async () => {
    const password = "correct horse battery";
    const [a, b] = [
      await single.createTenant({ ...pooled, maxUsers: 3, ownerEmail: email, ownerPassword: password }),
      await single.createTenant({ ...pooled, maxUsers: 3, ownerEmail: email, ownerPassword: password }),
    ];
    const outcomes = await Promise.all(
      [a, b].map(async (t) => {
        const token = (await auth.login({ email, password }, { headers: { "x-tenant-id": t.tenantId } })).accessToken;
        const headers = { headers: { "x-tenant-id": t.tenantId, authorization: `Bearer ${token}` } };
        return Promise.all(Array.from({ length: 5 }, (_, i) => code(users.createUser({ email: `user${i}@example.com`, password }, headers))));
      }),
    );
    for (const [i, t] of [a, b].entries()) {
      expect(outcomes[i]!.filter((o) => o === "ok")).toHaveLength(2);
      expect(outcomes[i]!.filter((o) => o === "ResourceExhausted")).toHaveLength(3);
      expect(await single.sqlAs(t, "select count(*)::int as n from users")).toEqual([{ n: 3 }]);
    }
    // The advisory lock's key names the tenant's schema, so the tenants of a pool database do not wait for each other.
    const keyOf = async (t: typeof a) => (await single.sqlAs<{ key: number }>(t, "select hashtext('tenantry.' || current_schema() || '.users') as key"))[0]!.key;
    expect(await keyOf(a)).not.toBe(await keyOf(b));
  });
});
