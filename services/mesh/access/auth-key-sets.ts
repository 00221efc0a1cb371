import { createClient, type Transport } from "@connectrpc/connect";
import { AuthService } from "../../../gen/tenantry/auth/v1/auth_service_pb.js";
import { tenantIdHeader } from "../wire/tenant-id.ts";
import type { UserTokensOptions } from "./user-tokens.ts";

/**
 * Fetches tenants' token signing key sets from Auth (`GetJwks`, in the
 * tenant the call names), as the JSON text of a JWK set, with the names in
 * the tenant's permission catalog, for `UserTokens`. The only module of the
 * mesh runtime that knows Auth's contract.
 */
export function authKeySets(transport: Transport): UserTokensOptions["fetchKeySet"] {
  const auth = createClient(AuthService, transport);
  return async (tenantId, timeoutMs) => {
    const { jwks, permissions } = await auth.getJwks({}, { headers: { [tenantIdHeader]: tenantId }, timeoutMs });
    return { jwks, permissions };
  };
}
