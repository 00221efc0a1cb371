import type { ServiceImpl } from "@connectrpc/connect";
import type { MikroORM } from "@mikro-orm/postgresql";
import { PlatformService } from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import type { Cluster } from "./platform-database.ts";
import { provisionTenant, type ProvisioningDeps } from "./tenant-provisioning.ts";
import { routeMessage, tenantMessage } from "./tenant-records.ts";
import { getTenant, listTenants } from "./tenant-registry.ts";

export { PlatformService };

/** `tenantry.platform.v1.PlatformService` over the registry in `orm`. */
export function platformService(orm: MikroORM, cluster: Cluster, provisioning: ProvisioningDeps): ServiceImpl<typeof PlatformService> {
  return {
    async createTenant(req) {
      return { tenant: tenantMessage(await provisionTenant(orm.em.fork(), provisioning, req)) };
    },
    async getTenant(req) {
      return { tenant: tenantMessage(await getTenant(orm.em.fork(), req.tenantId)) };
    },
    async listTenants(req) {
      const page = await listTenants(orm.em.fork(), req);
      return { tenants: page.tenants.map(tenantMessage), nextPageToken: page.nextPageToken };
    },
    async resolveTenant(req) {
      return { route: routeMessage(await getTenant(orm.em.fork(), req.tenantId), cluster) };
    },
  };
}
