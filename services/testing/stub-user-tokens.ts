import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import type { TokenUser, TokenVerifier } from "../mesh/index.ts";
import { tenantTokenInterceptor } from "./access-tokens.ts";
import { allPermissions } from "./declared-catalog.ts";

/**
 * Users' access tokens for a service that runs without Auth: a token is
 * whatever `issue` handed out, and it grants the permissions it was issued
 * with, for its tenant only.
 */
export class StubUserTokens implements TokenVerifier {
  readonly #issued = new Map<string, TokenUser>();

  /** A token of a user of `tenantId` holding `permissions` (default every one). */
  issue(tenantId: string, options: { permissions?: string[]; userId?: string } = {}): string {
    const token = `stub-${randomUUID()}`;
    this.#issued.set(token, { tenantId, userId: options.userId ?? randomUUID(), permissions: new Set(options.permissions ?? allPermissions) });
    return token;
  }

  async verify(token: string, tenantId: string): Promise<TokenUser> {
    const user = this.#issued.get(token);
    if (user === undefined) {
      throw new ConnectError("the access token is not valid (never issued): log in again", Code.Unauthenticated);
    }
    if (user.tenantId !== tenantId) {
      throw new ConnectError(`the access token is for another tenant than "${tenantId}"`, Code.PermissionDenied);
    }
    return user;
  }

  /** A client interceptor that gives every call naming a tenant a token with every permission, unless it has one. */
  interceptor(): Interceptor {
    const tokens = new Map<string, string>();
    return tenantTokenInterceptor((tenantId) => {
      let token = tokens.get(tenantId);
      if (token === undefined) {
        token = this.issue(tenantId);
        tokens.set(tenantId, token);
      }
      return token;
    });
  }
}
