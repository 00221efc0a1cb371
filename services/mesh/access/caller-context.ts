import { createContextKey } from "@connectrpc/connect";
import type { Caller } from "./credentials.ts";
import type { TokenUser } from "./user-tokens.ts";

/** Who made the call, as the access interceptor identified them. */
export const kCaller = createContextKey<Caller>({ kind: "none" }, { description: "caller" });

/** The user of a TENANT method's call, from its verified access token. */
export const kUser = createContextKey<TokenUser | undefined>(undefined, { description: "user" });
