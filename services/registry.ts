// Tenantry's services, one entry each. Everything that lists the services
// follows from here: `npm start` (ports, their variables, addresses, banner),
// Platform's default TENANTRY_SCHEMA_SERVICES, the meshes tests start
// (services/testing), and the Kubernetes manifests, which
// `npm run deploy:manifests` writes from these entries into deploy/k8s/services/.
//
// A new service is its folder, services/<name>/ (main.ts, start.ts,
// config.ts, …; see DESIGN.md), one entry below, and `npm run deploy:manifests`:
// `npx tenantry new-service <name>` makes them (docs/adding-a-service.md).
//
// Plain data: importing this module loads no service code, so that npm
// start, Platform's configuration, the test meshes, benchmarks and the deploy
// spec can all read it.
import type { Logger, MeshServer, Telemetry } from "./mesh/index.ts";

/** A service as Tenantry runs it. */
export interface RegisteredService {
  /**
   * Lower-case name: its folder `services/<name>/`, its Kubernetes objects,
   * its key in TENANTRY_SCHEMA_SERVICES and npm start's
   * `TENANTRY_<NAME>_GRPC_PORT` and `_HTTP_PORT`.
   */
  readonly name: string;
  /** Its gRPC port unless configured otherwise (TENANTRY_GRPC_PORT), in `npm start`, its container and its Kubernetes Service. */
  readonly grpcPort: number;
  /** Its HTTP port unless configured otherwise (TENANTRY_HTTP_PORT). */
  readonly httpPort: number;
  /**
   * Its process's entry, from the repository root. `start.ts` beside it
   * exports a {@link ServiceStart} that starts the service in the caller's
   * process (what main.ts runs, and what the in-process test mesh starts).
   */
  readonly main: string;
  /**
   * The schema it owns in every tenant database, named after the service
   * (as `startTenantService` names it): Platform has it migrate that schema
   * on every tenant. None for Platform, whose data is its own database.
   */
  readonly schema?: string;
  /**
   * Secrets it reads besides the mesh key and the operator token, which
   * every service reads: TENANTRY_MASTER_KEY if it opens stored secrets
   * (npm start leaves the services to share it through the data directory),
   * TENANTRY_DATABASE_URL if it is given the platform database's URL,
   * TENANTRY_BACKUP_S3_ACCESS_KEY_ID and …_SECRET_ACCESS_KEY if it keeps
   * backups (empty unless they go to S3 with a key of their own). On
   * Kubernetes it takes them from the Secret tenantry-secrets.
   */
  readonly secrets?: readonly ("TENANTRY_MASTER_KEY" | "TENANTRY_DATABASE_URL" | "TENANTRY_BACKUP_S3_ACCESS_KEY_ID" | "TENANTRY_BACKUP_S3_SECRET_ACCESS_KEY")[];
  /** What its Kubernetes manifests need that is not the same for every service. */
  readonly kubernetes: KubernetesNeeds;
}

/** What a service's Kubernetes manifests need of its own (deploy/manifests.ts makes the rest alike for all). */
export interface KubernetesNeeds {
  /** What the service is, for the head of its manifest. */
  readonly about: string;
  /**
   * Its pods: exactly this many, or as many as CPU calls for between `min`
   * and `max` (a HorizontalPodAutoscaler), and why when it is not obvious.
   */
  readonly replicas: { readonly count: number; readonly why?: string } | { readonly min: number; readonly max: number };
  /** One pod's CPU and memory as Kubernetes quantities, request and limit, and why when they differ from the usual. */
  readonly resources: {
    readonly cpu: readonly [request: string, limit: string];
    readonly memory: readonly [request: string, limit: string];
    readonly why?: string;
  };
  /** Keys it takes from the ConfigMap besides those every service, or every service that owns a schema, takes. */
  readonly settings?: readonly string[];
  /**
   * A volume that outlives its pods, at a folder of its data directory (the
   * only place it writes). Its pods then run one at a time, the old one
   * stopped before the new one starts.
   */
  readonly volume?: { readonly folder: string; readonly size: string; readonly about: string };
  /** How long it may take to start (seconds until /healthz answers) when longer than a minute, and why. */
  readonly startup?: { readonly seconds: number; readonly why: string };
}

/**
 * Starts a service in the caller's process from its settings (`env`, read
 * as the service reads its environment), with the process's logger and
 * telemetry; `overrides` are the service's own (tests and benchmarks). What
 * a service's `start.ts` exports as `start`.
 */
export type ServiceStart<Overrides = never, Server extends MeshServer = MeshServer> = (
  env: NodeJS.ProcessEnv,
  log: Logger,
  telemetry: Telemetry,
  overrides?: Overrides,
) => Promise<Server>;

/** Every service, Platform first (the others resolve their tenants through it). */
export const registry: readonly RegisteredService[] = [
  {
    name: "platform",
    grpcPort: 50051,
    httpPort: 8081,
    main: "services/platform/main.ts",
    secrets: ["TENANTRY_DATABASE_URL", "TENANTRY_MASTER_KEY", "TENANTRY_BACKUP_S3_ACCESS_KEY_ID", "TENANTRY_BACKUP_S3_SECRET_ACCESS_KEY"],
    kubernetes: {
      about: "Platform: tenant registry, provisioning, lifecycle and fleet migrations.",
      replicas: {
        count: 1,
        why:
          "Two would be safe for the registry (provisioning, offboarding and template refreshes take PostgreSQL advisory locks " +
          "per tenant and per cluster), but backups are files in the process's data directory unless kept in S3, which replicas would " +
          "not share; and the limits on sign-ups and on tenants' own backups, restores and downloads are counted per process. The other services keep serving the tenants they know while Platform restarts.",
      },
      resources: { cpu: ["250m", "1"], memory: ["256Mi", "512Mi"] },
      settings: [
        "TENANTRY_SCHEMA_SERVICES",
        "TENANTRY_TOKEN_ISSUER",
        "TENANTRY_BACKUP_S3_BUCKET",
        "TENANTRY_BACKUP_S3_REGION",
        "TENANTRY_BACKUP_S3_ENDPOINT",
        "TENANTRY_BACKUP_S3_FORCE_PATH_STYLE",
        "TENANTRY_BACKUP_S3_PREFIX",
      ],
      volume: {
        folder: "backups",
        size: "100Gi",
        about:
          "Tenants' backups (a sealed manifest and one encrypted file per table), scheduled and on request, and offboarded tenants' " +
          "final backups: the only copy of a tenant's data once its grace period has passed.",
      },
      startup: { seconds: 180, why: "Platform migrates its database before it listens." },
    },
  },
  {
    name: "auth",
    grpcPort: 50052,
    httpPort: 8082,
    main: "services/auth/main.ts",
    schema: "auth",
    secrets: ["TENANTRY_MASTER_KEY"],
    kubernetes: {
      about: "Auth: users, roles, sessions and each tenant's signing keys (schema `auth` in every tenant database).",
      replicas: { min: 2, max: 6 },
      resources: {
        cpu: ["500m", "2"],
        memory: ["256Mi", "512Mi"],
        why: "Password hashing (Argon2id, 19 MiB each) runs on libuv's four threads: more than one core and some memory in bursts of logins.",
      },
    },
  },
  {
    name: "backend",
    grpcPort: 50053,
    httpPort: 8083,
    main: "services/backend/main.ts",
    schema: "backend",
    kubernetes: {
      about: "Backend: the tenants' entries (schema `backend` in every tenant database).",
      replicas: { min: 2, max: 6 },
      resources: { cpu: ["250m", "1"], memory: ["256Mi", "512Mi"] },
    },
  },
];

/** The registered service of that name; throws naming the registered ones when there is none. */
export function registeredService(name: string): RegisteredService {
  const service = registry.find((s) => s.name === name);
  if (service === undefined) {
    throw new Error(`no service "${name}" in services/registry.ts (registered: ${registry.map((s) => s.name).join(", ")})`);
  }
  return service;
}

/** The variables by which `npm start` moves a service's ports, such as TENANTRY_AUTH_GRPC_PORT. */
export function portVariables(service: Pick<RegisteredService, "name">): { grpc: string; http: string } {
  const prefix = `TENANTRY_${service.name.toUpperCase().replaceAll("-", "_")}`;
  return { grpc: `${prefix}_GRPC_PORT`, http: `${prefix}_HTTP_PORT` };
}

/**
 * Platform's TENANTRY_SCHEMA_SERVICES (`name=host:port,…`) for `services`:
 * those that own a schema, each at the gRPC address `addressOf` gives it.
 */
export function schemaServicesSetting<S extends Pick<RegisteredService, "name" | "schema">>(services: readonly S[], addressOf: (service: S) => string): string {
  return services
    .filter((s) => s.schema !== undefined)
    .map((s) => `${s.name}=${addressOf(s)}`)
    .join(",");
}
