import { Code, ConnectError } from "@connectrpc/connect";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "../telemetry/logger.ts";
import type { PlatformRoutes, TenantStatus } from "./platform-routes.ts";
import type { WriteFreezeNotice } from "./write-freezes.ts";

/** Options of {@link watchTenantChanges}. */
export interface TenantChangeWatchOptions {
  /** Platform's change feed. */
  platform: Pick<PlatformRoutes, "changes">;
  /** Stops watching. */
  signal: AbortSignal;
  /**
   * Watch as this service instance: the feed then also announces write
   * freezes (see `onFreeze`). Without it, changes only.
   */
  instanceId?: string;
  /** The feed is connected: from now on no change is missed. With an `instanceId`, `freezes` are those in force. */
  onConnected: (freezes: WriteFreezeNotice[]) => void;
  /** The feed is lost; changes may be missed until it is back. */
  onDisconnected: () => void;
  /** A tenant changed. */
  onChange: (tenantId: string, status: TenantStatus) => void;
  /** A write freeze began, was renewed or ended (to a watch with an `instanceId`). */
  onFreeze?: (freeze: WriteFreezeNotice) => void;
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
      for await (const change of options.platform.changes(options.signal, options.instanceId)) {
        if (change.tenantId === "") {
          connected = true;
          backoff = initial;
          options.onConnected(change.freezes ?? []);
          continue;
        }
        if (change.freeze !== undefined) {
          options.onFreeze?.(change.freeze);
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
