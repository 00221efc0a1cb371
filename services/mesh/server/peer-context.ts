import { createContextKey } from "@connectrpc/connect";

/** The address the call came from (the socket's remote address), for per-source limits. */
export const kPeer = createContextKey<string>("", { description: "peer address" });
