import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import type { MikroORM } from "@mikro-orm/postgresql";
import { PlatformService } from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import type { ClusterRegistry } from "./cluster-registry.ts";
import type { SecretBox } from "./secret-box.ts";
import type { TenantProvisioner } from "./tenant-provisioning.ts";
import { rolePasswordContext, routeMessage, tenantMessage, type TierLimit } from "./tenant-records.ts";
import { getTenant, listTenants } from "./tenant-registry.ts";

export { PlatformService };

/** What PlatformService needs. */
export interface PlatformServiceDeps {
  orm: MikroORM;
  clusters: ClusterRegistry;
  provisioner: TenantProvisioner;
  box: SecretBox;
  tierLimits: Map<string, TierLimit>;
}

/** `tenantry.platform.v1.PlatformService` over the registry. */
export function platformService(deps: PlatformServiceDeps): ServiceImpl<typeof PlatformService> {
  const { orm, clusters, provisioner, box, tierLimits } = deps;
  return {
    async createTenant(req) {
      return { tenant: tenantMessage(await provisioner.create(req)) };
    },
    async retryProvisioning(req) {
      return { tenant: tenantMessage(await provisioner.retry(req.tenantId)) };
    },
    async getTenant(req) {
      return { tenant: tenantMessage(await getTenant(orm.em.fork(), req.tenantId)) };
    },
    async listTenants(req) {
      const page = await listTenants(orm.em.fork(), req);
      return { tenants: page.tenants.map(tenantMessage), nextPageToken: page.nextPageToken };
    },
    async resolveTenant(req) {
      const tenant = await getTenant(orm.em.fork(), req.tenantId);
      if (tenant.cluster == null || tenant.role == null || tenant.rolePassword == null) {
        throw new ConnectError(`tenant "${tenant.id}" has no database role; recreate it`, Code.FailedPrecondition);
      }
      const password = box.open(tenant.rolePassword, rolePasswordContext(tenant.id));
      return { route: routeMessage(tenant, await clusters.access(tenant.cluster), password, tierLimits) };
    },
  };
}
