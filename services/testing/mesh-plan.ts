import { registeredService, registry, schemaServicesSetting, type RegisteredService } from "../registry.ts";
import { freePort } from "./free-port.ts";

/** A service a test mesh runs that is not in services/registry.ts: the one under test. */
export interface UnregisteredService {
  /** Its name, unlike any registered one's: its key in Platform's TENANTRY_SCHEMA_SERVICES, its logs. */
  name: string;
  /** The schema it owns in every tenant database (its name): Platform then has it migrate that schema on every tenant. */
  schema?: string;
}

/** Which services a test mesh runs, and what else they are started with. */
export interface MeshPlanOptions {
  /** The registered services to run besides Platform, which always runs; by default every one but those of `addedLater`. */
  services?: readonly string[];
  /** One more service, not in the registry, wired like the registered ones. */
  unregistered?: UnregisteredService;
  /**
   * Registered services planned like the others (ports, settings) but left
   * out of Platform's TENANTRY_SCHEMA_SERVICES: services registered after
   * the tenants made before they are added (see `schemaServices`).
   */
  addedLater?: readonly string[];
  /** Settings every service shares: data dir, mesh key, operator token. */
  sharedEnv: Record<string, string>;
  /** Superuser URL of Platform's database. */
  platformDatabaseUrl: string;
  /**
   * Platform's TENANTRY_TIER_PLACEMENTS: the placement of tenants made
   * without one, per tier. By default {@link testTierPlacements}; null
   * leaves it unset, for Platform's own defaults (STANDARD pooled).
   */
  tierPlacements?: string | null;
  /** Extra settings of Platform, over the planned ones (a TENANTRY_TIER_PLACEMENTS among them over `tierPlacements`). */
  platformEnv?: Record<string, string>;
  /** Extra settings of every service but Platform, over the planned ones. */
  tenantServiceEnv?: Record<string, string>;
  /**
   * Pick each service's HTTP port now (processes, whose readiness is asked
   * there); else each listens on any free one. A port picked now may be
   * taken by another process before the service binds it, so only what
   * must be known is picked.
   */
  pickHttpPorts?: boolean;
}

/**
 * The placement of tenants a test mesh makes without one: every tier
 * dedicated, whatever Platform's defaults (STANDARD pooled), since most
 * specs make STANDARD tenants and test what a database of their own does.
 * Specs of pooled tenants ask for the placement (`placement` of
 * CreateTenant), or set `tierPlacements` (null for Platform's defaults).
 */
export const testTierPlacements = "standard=dedicated,premium=dedicated,enterprise=dedicated";

/** One service of a test mesh: where it listens and the settings it starts with. */
export interface PlannedService {
  name: string;
  /** Its registry entry; undefined for the unregistered service. */
  registered: RegisteredService | undefined;
  /** The schema it owns in every tenant database, if any. */
  schema: string | undefined;
  grpcPort: number;
  /** 0 unless picked (see `pickHttpPorts`): the service listens on any free port. */
  httpPort: number;
  /**
   * Its settings: the shared ones, its ports, and where it finds Platform
   * and Auth, or for Platform, its database and the services that own a schema.
   */
  env: Record<string, string>;
}

/**
 * Picks free ports for the services of a test mesh and the settings each
 * starts with, Platform first: the others find Platform and Auth at their
 * ports, and Platform finds every service that owns a schema, the
 * unregistered one included.
 */
export async function planMesh(options: MeshPlanOptions): Promise<PlannedService[]> {
  const later = new Set(options.addedLater);
  const names = new Set(["platform", ...(options.services ?? registry.map((s) => s.name).filter((name) => !later.has(name))), ...later]);
  const members: { name: string; schema?: string | undefined; registered: RegisteredService | undefined }[] = [...names].map((name) => {
    const registered = registeredService(name);
    return { name, schema: registered.schema, registered };
  });
  if (options.unregistered !== undefined) {
    const { name, schema } = options.unregistered;
    if (registry.some((s) => s.name === name)) {
      throw new Error(`"${name}" is a registered service, not one under test: give the service under test a name of its own`);
    }
    members.push({ name, schema, registered: undefined });
  }
  const ports = new Map<string, { grpcPort: number; httpPort: number }>();
  for (const { name } of members) {
    ports.set(name, { grpcPort: await freePort(), httpPort: options.pickHttpPorts ? await freePort() : 0 });
  }
  // Auth left out of the mesh is unreachable, never another mesh's: nothing listens on port 1.
  const address = (name: string) => `127.0.0.1:${ports.get(name)?.grpcPort ?? 1}`;
  const placements = options.tierPlacements === undefined ? testTierPlacements : options.tierPlacements;
  const tierPlacements: Record<string, string> = placements === null ? {} : { TENANTRY_TIER_PLACEMENTS: placements };
  return members.map(({ name, schema, registered }) => {
    const { grpcPort, httpPort } = ports.get(name)!;
    const own = { ...options.sharedEnv, TENANTRY_GRPC_PORT: String(grpcPort), TENANTRY_HTTP_PORT: String(httpPort) };
    const env =
      name === "platform"
        ? {
            ...own,
            TENANTRY_DATABASE_URL: options.platformDatabaseUrl,
            TENANTRY_SCHEMA_SERVICES: schemaServicesSetting(members.filter((s) => !later.has(s.name)), (s) => address(s.name)),
            // Specs that test the backup schedule turn it on; no other spec wants backups of its tenants taken meanwhile.
            TENANTRY_BACKUP_SCHEDULE: "off",
            // Specs of the database stock turn it on; the others provision by copying the template, with no stock built beside them.
            TENANTRY_DATABASE_STOCK: "0",
            // Likewise the pooled stock: its own spec turns it on.
            TENANTRY_POOLED_STOCK: "0",
            ...tierPlacements,
            ...options.platformEnv,
          }
        : { ...own, TENANTRY_PLATFORM_ADDRESS: address("platform"), TENANTRY_AUTH_ADDRESS: address("auth"), ...options.tenantServiceEnv };
    return { name, registered, schema, grpcPort, httpPort, env };
  });
}

/** Platform's TENANTRY_SCHEMA_SERVICES for every service of a plan that owns a schema, those added later included. */
export function schemaServices(plan: readonly PlannedService[]): string {
  return schemaServicesSetting(plan, (s) => `127.0.0.1:${s.grpcPort}`);
}
