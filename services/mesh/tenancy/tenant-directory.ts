import { Code, ConnectError } from "@connectrpc/connect";
import { LRUCache } from "lru-cache";
import { checkTenantId } from "../wire/tenant-id.ts";
import { Placement, TenantStatus, type TenantRoute } from "./platform-routes.ts";

export { Placement, TenantStatus, type TenantRoute };

/** Options of a {@link TenantDirectory}. */
export interface TenantDirectoryOptions {
  /**
   * Asks the source of truth (Platform's ResolveTenant) for a tenant's route.
   * Rejects with NOT_FOUND for an unknown tenant.
   */
  resolve: (tenantId: string, signal: AbortSignal) => Promise<TenantRoute>;
  /** Asks for the routes of several tenants at once (Platform's ResolveTenants), those unknown left out; without it, {@link TenantDirectory.prefetch} does nothing. */
  resolveMany?: (tenantIds: string[], signal: AbortSignal) => Promise<TenantRoute[]>;
  /** How many tenants' routes are kept; the least recently used go first. */
  maxEntries: number;
  /** How long an ACTIVE tenant's route is trusted while no change feed is connected. */
  ttlMs: number;
  /** How long it is trusted while the change feed is connected (changes arrive as they happen). */
  watchedTtlMs?: number;
  /**
   * How long a tenant that is not ACTIVE is trusted: short, since a
   * provisioning tenant becomes ACTIVE moments later.
   */
  inactiveTtlMs?: number;
  /**
   * While Platform cannot be reached, an ACTIVE tenant's cached route keeps
   * being served for up to this long after it was fetched.
   */
  maxStalenessMs?: number;
}

/** A lookup waiting for a route asked for with others' (see `TenantDirectory.#ask`). */
interface Asker {
  resolve: (route: TenantRoute) => void;
  reject: (error: unknown) => void;
}

/** Most tenants one ResolveTenants names (Platform's limit). */
const maxResolvedAtOnce = 1000;

interface Entry {
  route: TenantRoute;
  /** Date.now() when fetched. */
  fetchedAt: number;
  /** Whether the change feed was connected when the route was fetched. */
  watched: boolean;
}

/**
 * The routes of the tenants a service process has seen: a bounded cache in
 * front of Platform that asks it once per tenant however many calls wait.
 * With the change feed connected (`watching`), changes drop routes as they
 * happen and routes are trusted longer; without it, a TTL applies. While
 * Platform is unreachable, ACTIVE routes are served up to a bounded age, at
 * once: Platform is asked again in the background, not by each call.
 */
export class TenantDirectory {
  readonly #options: Required<Omit<TenantDirectoryOptions, "resolveMany">> & Pick<TenantDirectoryOptions, "resolveMany">;
  readonly #cache: LRUCache<string, Entry>;
  readonly #inFlight = new Map<string, Promise<Entry>>();
  /** One string for each value that tenants' routes share (a host, a pool database and its login), so that each route does not keep its own copy. */
  readonly #shared = new LRUCache<string, string>({ max: 1000 });
  /** Tenants a prefetch is asking for, each with a mark of that prefetch: a change meanwhile drops the mark, and the answer is not cached. */
  readonly #prefetching = new Map<string, object>();
  #watching = false;
  /** Tenants to be asked for together at the end of this turn of the event loop (see `#ask`), with the lookups waiting for each. */
  #asking: Map<string, Asker[]> | undefined;
  /** Platform could not be reached by the last resolve that ended: stale routes are served without waiting for it. */
  #platformUnreachable = false;

  constructor(options: TenantDirectoryOptions) {
    this.#options = {
      inactiveTtlMs: Math.min(1000, options.ttlMs),
      watchedTtlMs: options.ttlMs,
      maxStalenessMs: Math.max(options.ttlMs, 300_000),
      ...options,
    };
    this.#cache = new LRUCache<string, Entry>({ max: options.maxEntries });
  }

  /**
   * Returns the route of a tenant in any status. Rejects with
   * INVALID_ARGUMENT for a malformed id and NOT_FOUND for an unknown tenant.
   */
  async lookup(tenantId: string | null | undefined, where?: string): Promise<TenantRoute> {
    const id = checkTenantId(tenantId, where);
    const entry = this.#cache.get(id);
    if (entry !== undefined && Date.now() - entry.fetchedAt < this.#ttlOf(entry)) {
      return entry.route;
    }
    if (this.#platformUnreachable && this.#servableWhileUnreachable(entry)) {
      // Each call would otherwise wait for Platform's deadline first: ask in the background instead.
      void this.#refresh(id, entry).catch(() => undefined);
      return entry.route;
    }
    return this.#refresh(id, entry);
  }

  /**
   * Asks Platform in one request for the routes of those of `tenantIds` it
   * has no fresh route of and is not asking for already, so that their
   * lookups that follow find them cached (a batch of tenants about to be
   * migrated one after another). Best effort: when the request fails, each
   * lookup asks for its own route, as it would have.
   */
  async prefetch(tenantIds: string[]): Promise<void> {
    const resolveMany = this.#options.resolveMany;
    if (resolveMany === undefined) {
      return;
    }
    const wanted = tenantIds.filter((id) => {
      const entry = this.#cache.get(id);
      return !(entry !== undefined && Date.now() - entry.fetchedAt < this.#ttlOf(entry)) && !this.#inFlight.has(id) && !this.#prefetching.has(id);
    });
    if (wanted.length === 0) {
      return;
    }
    const mark = {};
    const watched = this.#watching;
    for (const id of wanted) {
      this.#prefetching.set(id, mark);
    }
    try {
      const routes = await resolveMany(wanted, AbortSignal.timeout(10_000));
      const fetchedAt = Date.now();
      for (const route of routes) {
        // Not a tenant that changed while Platform answered, nor one a lookup fetched meanwhile.
        if (this.#prefetching.get(route.tenantId) === mark && !this.#inFlight.has(route.tenantId)) {
          this.#cache.set(route.tenantId, { route: this.#sharing(route), fetchedAt, watched });
        }
      }
      this.#platformUnreachable = false;
    } catch {
      // Each lookup asks on its own, and says what went wrong.
    } finally {
      for (const id of wanted) {
        if (this.#prefetching.get(id) === mark) {
          this.#prefetching.delete(id);
        }
      }
    }
  }

  /**
   * Returns the route of a tenant that may be served: INVALID_ARGUMENT for a
   * missing or malformed id, NOT_FOUND for an unknown tenant,
   * FAILED_PRECONDITION for a tenant that is not ACTIVE.
   */
  async resolveActive(tenantId: string | null | undefined, where?: string): Promise<TenantRoute> {
    let route = await this.lookup(tenantId, where);
    if (route.status === TenantStatus.PROVISIONING) {
      // Provisioning ends moments after the route was cached (this service's
      // own Migrate looked it up): ask again rather than refuse a new tenant.
      route = await this.#refresh(route.tenantId, this.#cache.get(route.tenantId));
    }
    switch (route.status) {
      case TenantStatus.ACTIVE:
        return route;
      case TenantStatus.SUSPENDED:
        throw new ConnectError(`tenant "${route.tenantId}" is suspended; an operator can resume it`, Code.FailedPrecondition);
      case TenantStatus.PROVISIONING:
        throw new ConnectError(`tenant "${route.tenantId}" is still being provisioned; retry shortly`, Code.FailedPrecondition);
      default:
        throw new ConnectError(
          `tenant "${route.tenantId}" is ${TenantStatus[route.status]?.toLowerCase() ?? "not active"} and cannot be served`,
          Code.FailedPrecondition,
        );
    }
  }

  /**
   * Forgets a tenant's route, so that the next call asks again: an answer
   * Platform is giving meanwhile may predate the change, so it is neither
   * cached nor given to calls that come after.
   */
  invalidate(tenantId: string): void {
    this.#cache.delete(tenantId);
    this.#inFlight.delete(tenantId);
    this.#prefetching.delete(tenantId);
  }

  /**
   * The change feed is connected (true) or lost (false). On connecting,
   * every route is dropped: changes made while disconnected were not seen.
   */
  setWatching(watching: boolean): void {
    if (watching) {
      this.#cache.clear();
      this.#inFlight.clear();
      this.#prefetching.clear();
      this.#platformUnreachable = false;
    }
    this.#watching = watching;
  }

  /** How many routes are cached. */
  get size(): number {
    return this.#cache.size;
  }

  #ttlOf(entry: Entry): number {
    if (entry.route.status !== TenantStatus.ACTIVE) {
      return this.#options.inactiveTtlMs;
    }
    return entry.watched && this.#watching ? this.#options.watchedTtlMs : this.#options.ttlMs;
  }

  /** Whether a cached route may be served while Platform cannot be reached: an ACTIVE one, up to a bounded age. */
  #servableWhileUnreachable(entry: Entry | undefined): entry is Entry {
    return entry?.route.status === TenantStatus.ACTIVE && Date.now() - entry.fetchedAt < this.#options.maxStalenessMs;
  }

  /**
   * `route`, its values that other tenants' routes hold too replaced with
   * the strings kept for them: the host, and a pooled tenant's pool database,
   * login and password. A service may keep the routes of tens of thousands
   * of tenants, most of them sharing a few pool databases.
   */
  #sharing(route: TenantRoute): TenantRoute {
    route.host = this.#sharedString(route.host);
    if (route.placement === Placement.POOLED) {
      route.database = this.#sharedString(route.database);
      route.user = this.#sharedString(route.user);
      route.password = this.#sharedString(route.password);
    }
    return route;
  }

  #sharedString(value: string): string {
    const kept = this.#shared.get(value);
    if (kept !== undefined) {
      return kept;
    }
    this.#shared.set(value, value);
    return value;
  }

  /**
   * Asks Platform for a tenant's route. The tenants asked for in the same
   * turn of the event loop (the first calls of many tenants, as a service
   * starts or as traffic reaches tenants it has not served yet) are asked
   * for in one ResolveTenants rather than a ResolveTenant each: one request
   * and two queries of Platform's for all of them. A tenant the answer
   * leaves out (unknown to Platform) is asked for on its own, so that its
   * lookup fails as it always has; so is each tenant when ResolveTenants
   * fails for any reason but Platform being unreachable.
   */
  #ask(id: string): Promise<TenantRoute> {
    const resolveMany = this.#options.resolveMany;
    if (resolveMany === undefined) {
      return this.#options.resolve(id, AbortSignal.timeout(10_000));
    }
    let batch = this.#asking;
    if (batch === undefined) {
      batch = new Map();
      this.#asking = batch;
      setImmediate(() => {
        this.#asking = undefined;
        this.#askTogether(batch!, resolveMany);
      });
    }
    const waiting = batch.get(id) ?? [];
    batch.set(id, waiting);
    return new Promise<TenantRoute>((resolve, reject) => waiting.push({ resolve, reject }));
  }

  #askTogether(batch: Map<string, Asker[]>, resolveMany: NonNullable<TenantDirectoryOptions["resolveMany"]>): void {
    const alone = (id: string, askers: Asker[]) =>
      this.#options.resolve(id, AbortSignal.timeout(10_000)).then(
        (route) => askers.forEach((a) => a.resolve(route)),
        (error: unknown) => askers.forEach((a) => a.reject(error)),
      );
    const ids = [...batch.keys()];
    if (ids.length === 1) {
      void alone(ids[0]!, batch.get(ids[0]!)!);
      return;
    }
    for (let from = 0; from < ids.length; from += maxResolvedAtOnce) {
      const chunk = ids.slice(from, from + maxResolvedAtOnce);
      resolveMany(chunk, AbortSignal.timeout(10_000)).then(
        (routes) => {
          const found = new Map(routes.map((route) => [route.tenantId, route]));
          for (const id of chunk) {
            const route = found.get(id);
            if (route === undefined) {
              void alone(id, batch.get(id)!);
            } else {
              batch.get(id)!.forEach((a) => a.resolve(route));
            }
          }
        },
        (error: unknown) => {
          const code = ConnectError.from(error).code;
          for (const id of chunk) {
            if (code === Code.Unavailable || code === Code.DeadlineExceeded) {
              batch.get(id)!.forEach((a) => a.reject(error));
            } else {
              void alone(id, batch.get(id)!);
            }
          }
        },
      );
    }
  }

  /** Asks Platform, once per tenant at a time; serves a stale ACTIVE route while Platform is unreachable. */
  async #refresh(id: string, stale: Entry | undefined): Promise<TenantRoute> {
    let fetching = this.#inFlight.get(id);
    if (fetching === undefined) {
      const watched = this.#watching;
      const started: Promise<Entry> = this.#ask(id).then((route) => {
        const entry = { route: this.#sharing(route), fetchedAt: Date.now(), watched };
        // Not when the tenant changed while Platform answered (the fetch is no longer the tenant's).
        if (this.#inFlight.get(id) === started) {
          // Keyed by the route's own id when it is the same, rather than by the string of the call that asked.
          this.#cache.set(route.tenantId === id ? route.tenantId : id, entry);
        }
        this.#platformUnreachable = false;
        return entry;
      }).finally(() => {
        if (this.#inFlight.get(id) === started) {
          this.#inFlight.delete(id);
        }
      });
      fetching = started;
      this.#inFlight.set(id, fetching);
    }
    try {
      return (await fetching).route;
    } catch (error) {
      const cause = ConnectError.from(error);
      if (cause.code === Code.NotFound) {
        this.#cache.delete(id);
        throw new ConnectError(`tenant "${id}" not found`, Code.NotFound);
      }
      const unreachable = cause.code === Code.Unavailable || cause.code === Code.DeadlineExceeded;
      if (!unreachable) {
        throw cause;
      }
      this.#platformUnreachable = true;
      if (this.#servableWhileUnreachable(stale)) {
        return stale.route;
      }
      throw new ConnectError(`cannot resolve tenant "${id}": Platform is unreachable (${cause.rawMessage}); retry later`, Code.Unavailable);
    }
  }
}
