import { Code, ConnectError } from "@connectrpc/connect";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "../telemetry/logger.ts";
import type { PlatformRoutes, TenantStatus } from "./platform-routes.ts";

/** Options of {@link watchTenantChanges}. */
export interface TenantChangeWatchOptions {
  /** Platform's change feed. */
  platform: Pick<PlatformRoutes, "changes">;
  /** Stops watching. */
  signal: AbortSignal;
  /** The feed is connected: from now on no change is missed. */
  onConnected: () => void;
  /** The feed is lost; changes may be missed until it is back. */
  onDisconnected: () => void;
  /** A tenant changed. */
  onChange: (tenantId: string, status: TenantStatus) => void;
  log: Logger;
  /** First and longest wait before reconnecting. */
  backoffMs?: { initial: number; max: number };
}

/**
 * Follows Platform's WatchTenants stream for as long as `signal` allows,
 * reconnecting with jittered exponential backoff whenever it breaks.
 * Resolves once stopped.
 */
export async function watchTenantChanges(options: TenantChangeWatchOptions): Promise<void> {
  const { initial, max } = options.backoffMs ?? { initial: 250, max: 10_000 };
  let backoff = initial;
  while (!options.signal.aborted) {
    let connected = false;
    try {
      for await (const change of options.platform.changes(options.signal)) {
        if (change.tenantId === "") {
          connected = true;
          backoff = initial;
          options.onConnected();
          continue;
        }
        options.onChange(change.tenantId, change.status);
      }
    } catch (error) {
      if (options.signal.aborted) {
        break;
      }
      const cause = ConnectError.from(error);
      if (cause.code !== Code.Unavailable || connected) {
        options.log.warn({ code: Code[cause.code], reason: cause.rawMessage }, "tenant change feed broke; reconnecting");
      }
    }
    if (connected) {
      options.onDisconnected();
    }
    await sleep(backoff * (0.5 + Math.random() / 2), undefined, { signal: options.signal }).catch(() => undefined);
    backoff = Math.min(backoff * 2, max);
  }
}
