import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import type { MikroORM } from "@mikro-orm/postgresql";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { AuditOutcome, Placement, PlatformService, Tier, type TenantRouteSchema } from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import { checkTenantId, kCaller, kPeer, readFieldMask, type SecretBox, type WriteFreezeNotice } from "../mesh/index.ts";
import { actorOf, type AuditLog } from "./audit-log.ts";
import type { ClusterRegistry } from "./cluster-registry.ts";
import type { TenantWriteFreezes } from "./freezes/index.ts";
import { changeableTenantFields, type TenantLifecycle } from "./lifecycle/index.ts";
import type { TierChangeMoves } from "./moves/index.ts";
import type { TenantProvisioner } from "./provisioning/index.ts";
import type { RateLimit } from "./rate-limit.ts";
import {
  auditOutcomes,
  findPoolDatabase,
  findRunningMove,
  findTenants,
  getTenant,
  listTenants,
  placementNames,
  poolPasswordContext,
  rolePasswordContext,
  runningMovesOf,
  statusNames,
} from "./stores/index.ts";
import type { Tenant } from "./entities/tenant.ts";
import type { TenantChangeFeed } from "./tenant-change-feed.ts";
import { moveMessage, routeMessage, tenantMessage, type TierLimit } from "./tenant-messages.ts";

export { PlatformService };

/** What PlatformService needs. */
export interface PlatformServiceDeps {
  orm: MikroORM;
  clusters: ClusterRegistry;
  provisioner: TenantProvisioner;
  lifecycle: TenantLifecycle;
  audit: AuditLog;
  feed: TenantChangeFeed;
  freezes: TenantWriteFreezes;
  box: SecretBox;
  tierLimits: Map<string, TierLimit>;
  signUps: RateLimit;
  /** Starts the move of a tenant whose new tier has another default placement. */
  tierChangeMoves: TierChangeMoves;
}

/** The most tenants one ResolveTenants names. */
const maxResolved = 1000;

/** `tenantry.platform.v1.PlatformService` over the registry; every lifecycle change is audited. */
export function platformService(deps: PlatformServiceDeps): ServiceImpl<typeof PlatformService> {
  const { orm, clusters, provisioner, lifecycle, audit, feed, freezes, box, tierLimits, signUps, tierChangeMoves } = deps;
  /** A tenant's route, its pool database's (for a pooled tenant) read through `poolOf`; its status alone when there is no way in. */
  async function routeOf(tenant: Tenant, poolOf: (cluster: string, name: string) => ReturnType<typeof findPoolDatabase>): Promise<MessageInitShape<typeof TenantRouteSchema>> {
    const noWayIn = { tenantId: tenant.id, status: tenantMessage(tenant).status };
    if (tenant.placement === placementNames.pooled) {
      // Its pool database's login, which takes on the tenant's role for each call.
      const pool = tenant.cluster == null || tenant.database === "" || tenant.status === statusNames.deleted ? undefined : await poolOf(tenant.cluster, tenant.database);
      if (pool === undefined) {
        return noWayIn;
      }
      const login = { user: pool.role, password: box.open(pool.rolePassword, poolPasswordContext(pool.cluster, pool.name)) };
      return routeMessage(tenant, await clusters.access(tenant.cluster!), login, tierLimits);
    }
    if (tenant.cluster == null || tenant.role == null || tenant.rolePassword == null) {
      // Deleted (or from before per-tenant roles): its status, and no way in.
      return noWayIn;
    }
    const login = { user: tenant.role, password: box.open(tenant.rolePassword, rolePasswordContext(tenant.id)) };
    return routeMessage(tenant, await clusters.access(tenant.cluster), login, tierLimits);
  }
  return {
    async createTenant(req, ctx) {
      const detail = { displayName: req.displayName, tier: Tier[req.tier], cluster: req.cluster, region: req.region, placement: Placement[req.placement] };
      return { tenant: tenantMessage(await audit.audited(ctx, req.tenantId, detail, () => provisioner.create(req))) };
    },
    async signUp(req, ctx) {
      const source = ctx.values.get(kPeer);
      signUps.take(source);
      if (req.ownerEmail === "" || req.ownerPassword === "") {
        throw new ConnectError("owner_email and owner_password are required", Code.InvalidArgument);
      }
      const detail = { displayName: req.displayName, ownerEmail: req.ownerEmail, source };
      const tenant = await audit.audited(ctx, req.tenantId, detail, () =>
        provisioner.create({ ...req, tier: Tier.STANDARD, cluster: "", region: "" }),
      );
      return { tenant: tenantMessage(tenant) };
    },
    async retryProvisioning(req, ctx) {
      return { tenant: tenantMessage(await audit.audited(ctx, req.tenantId, {}, () => provisioner.retry(req.tenantId))) };
    },
    async updateTenant(req, ctx) {
      const detail = { paths: req.updateMask?.paths ?? [], displayName: req.displayName, tier: Tier[req.tier] };
      const paths = readFieldMask(req.updateMask, changeableTenantFields);
      const tenant = await audit.audited(ctx, req.tenantId, detail, async () => lifecycle.update(req.tenantId, { displayName: req.displayName, tier: req.tier, paths }));
      const move = paths.includes("tier") ? await tierChangeMoves.afterTierChange(tenant) : undefined;
      return move === undefined ? { tenant: tenantMessage(tenant) } : { tenant: tenantMessage(tenant, move), move: moveMessage(move) };
    },
    async suspendTenant(req, ctx) {
      return { tenant: tenantMessage(await audit.audited(ctx, req.tenantId, { reason: req.reason }, () => lifecycle.suspend(req.tenantId, req.reason))) };
    },
    async resumeTenant(req, ctx) {
      return { tenant: tenantMessage(await audit.audited(ctx, req.tenantId, {}, () => lifecycle.resume(req.tenantId))) };
    },
    async deleteTenant(req, ctx) {
      return { tenant: tenantMessage(await audit.audited(ctx, req.tenantId, {}, () => lifecycle.delete(req.tenantId))) };
    },
    async listAuditEvents(req) {
      const page = await audit.list(req);
      return {
        events: page.events.map((event) => ({
          id: BigInt(event.id),
          time: timestampFromDate(event.occurredAt),
          actor: event.actor,
          action: event.action,
          tenantId: event.tenantId ?? "",
          outcome: event.outcome === auditOutcomes.succeeded ? AuditOutcome.SUCCEEDED : AuditOutcome.FAILED,
          detail: JSON.stringify(event.detail),
        })),
        nextPageToken: page.nextPageToken,
      };
    },
    async getTenant(req) {
      const em = orm.em.fork();
      const tenant = await getTenant(em, req.tenantId);
      return { tenant: tenantMessage(tenant, await findRunningMove(em, tenant.id)) };
    },
    async listTenants(req) {
      const em = orm.em.fork();
      const page = await listTenants(em, req);
      const moves = await runningMovesOf(em, page.tenants.map((t) => t.id));
      return { tenants: page.tenants.map((tenant) => tenantMessage(tenant, moves.get(tenant.id))), nextPageToken: page.nextPageToken };
    },
    async resolveTenant(req) {
      const em = orm.em.fork();
      return { route: await routeOf(await getTenant(em, req.tenantId), (cluster, name) => findPoolDatabase(em, cluster, name)) };
    },
    async resolveTenants(req) {
      if (req.tenantIds.length > maxResolved) {
        throw new ConnectError(`tenant_ids names ${req.tenantIds.length} tenants: name at most ${maxResolved}`, Code.InvalidArgument);
      }
      const ids = [...new Set(req.tenantIds.map((id, i) => checkTenantId(id, `tenant_ids[${i}]`)))];
      const em = orm.em.fork();
      const tenants = await findTenants(em, ids);
      // Their pool databases, each read once.
      const pools = new Map<string, ReturnType<typeof findPoolDatabase>>();
      const poolOf = (cluster: string, name: string) => {
        const key = `${cluster}\0${name}`;
        let pool = pools.get(key);
        if (pool === undefined) {
          pool = findPoolDatabase(em, cluster, name);
          pools.set(key, pool);
        }
        return pool;
      };
      return { routes: await Promise.all(tenants.map((tenant) => routeOf(tenant, poolOf))) };
    },
    async *watchTenants(req, ctx) {
      if (req.instanceId === "") {
        for await (const change of feed.watch(ctx.signal)) {
          yield { tenantId: change.tenantId, status: change.status };
        }
        return;
      }
      // A service instance: freezes wait for it while it watches, and it hears of them.
      const caller = ctx.values.get(kCaller);
      const watcher = freezes.watching(req.instanceId, caller.kind === "mesh" ? caller.service : actorOf(caller));
      try {
        for await (const change of feed.watch(ctx.signal, { freezesInForce: watcher.inForce })) {
          yield {
            tenantId: change.tenantId,
            status: change.status,
            freezes: (change.freezes ?? []).map(freezeNotice),
            ...(change.freeze === undefined ? {} : { freeze: freezeNotice(change.freeze) }),
          };
        }
      } finally {
        watcher.stop();
      }
    },
  };
}

/** A write freeze as the change feed's WriteFreezeNotice. */
function freezeNotice(notice: WriteFreezeNotice) {
  return { tenantId: notice.tenantId, freezeId: notice.freezeId, lease: durationFromMs(notice.leaseMs) };
}
