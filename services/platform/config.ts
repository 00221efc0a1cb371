import { z } from "zod";
import { addressMap, commonEnv, port, positiveInt, readConfig } from "../mesh/index.ts";
import { registeredService, registry, schemaServicesSetting } from "../registry.ts";
import type { TierLimit } from "./tenant-messages.ts";

const platform = registeredService("platform");

const units: Record<string, number> = { b: 1, kb: 1024, mb: 1024 ** 2, gb: 1024 ** 3, tb: 1024 ** 4 };

/** Each tier's limits unless configured otherwise. */
const defaultTierLimits = new Map<string, TierLimit>([
  ["standard", { maxUsers: 50, maxStorageBytes: 10 * 1024 ** 3 }],
  ["premium", { maxUsers: 200, maxStorageBytes: 50 * 1024 ** 3 }],
  ["enterprise", { maxUsers: 0, maxStorageBytes: 0 }],
]);

/**
 * `tier=users/storage,…` such as `standard=50/10GB`; `unlimited` (or 0) for
 * no limit. Tiers not named keep their defaults.
 */
const tierLimits = z.string().transform((s, ctx) => {
  const limits = new Map(defaultTierLimits);
  for (const item of s.split(",").map((i) => i.trim()).filter((i) => i !== "")) {
    const m = /^(standard|premium|enterprise)=(\d+|unlimited)\/(?:(\d+(?:\.\d+)?)\s*([kmgt]?b)|(unlimited|0))$/i.exec(item);
    if (m === null) {
      ctx.addIssue({ code: "custom", message: `expected tier=users/size such as standard=50/10GB, got "${item}"` });
      return z.NEVER;
    }
    limits.set(m[1]!.toLowerCase(), {
      maxUsers: m[2] === "unlimited" ? 0 : Number(m[2]),
      maxStorageBytes: m[3] === undefined ? 0 : Math.round(Number(m[3]) * units[m[4]!.toLowerCase()]!),
    });
  }
  return limits;
});

/** Platform's settings, by environment variable. */
export const platformEnv = {
  ...commonEnv,
  /** gRPC listener port. */
  TENANTRY_GRPC_PORT: port.default(platform.grpcPort),
  /** HTTP listener port (Connect, gRPC-Web, gRPC; health checks). */
  TENANTRY_HTTP_PORT: port.default(platform.httpPort),
  /**
   * Superuser URL of the platform database, e.g.
   * postgres://postgres:secret@db.example.com:5432/tenantry_platform. Tenant
   * databases are created on the same server.
   */
  TENANTRY_DATABASE_URL: z.url({ protocol: /^postgres(ql)?$/, error: "expected a postgres:// URL" }),
  /**
   * The key that encrypts credentials at rest: 32 bytes, base64 or
   * base64url. Else generated into `<data dir>/master.key`.
   */
  TENANTRY_MASTER_KEY: z
    .string()
    .refine((s) => Buffer.from(s, "base64url").length === 32, "expected 32 bytes, base64 or base64url encoded")
    .optional(),
  /** Tenants the first cluster (the server of TENANTRY_DATABASE_URL) may hold, when it is registered. */
  TENANTRY_DEFAULT_CLUSTER_CAPACITY: positiveInt.default(1000),
  /** Region label of the first cluster, when it is registered. */
  TENANTRY_DEFAULT_CLUSTER_REGION: z.string().regex(/^[a-z0-9-]{0,40}$/, "lower-case letters, digits and hyphens").default("local"),
  /** Copy new tenant databases from a per-cluster template ("true") or migrate each one ("false"). */
  TENANTRY_TEMPLATE_DATABASES: z.enum(["true", "false"]).default("true").transform((v) => v === "true"),
  /** Users and storage each tier allows, carried in every tenant's route. */
  TENANTRY_TIER_LIMITS: tierLimits.default(defaultTierLimits),
  /** How long after DeleteTenant a tenant's database and role are dropped; 0 drops them at once. */
  TENANTRY_OFFBOARDING_GRACE_MS: z.coerce.number().int().min(0).default(7 * 24 * 3600 * 1000),
  /** How often Platform looks for offboarded tenants past their grace period. */
  TENANTRY_OFFBOARDING_CHECK_INTERVAL_MS: positiveInt.default(60_000),
  /** How long an in-place restore keeps the database it replaced (refusing connections), so that UndoRestore can bring it back; then it is dropped. */
  TENANTRY_RESTORE_KEEP_MS: z.coerce.number().int().min(0).default(24 * 3600 * 1000),
  /** How many connections read a tenant's tables at once while it is backed up (besides the one holding the snapshot). */
  TENANTRY_BACKUP_WORKERS: positiveInt.default(2),
  /** How many sign-ups (SignUp) one source address may attempt per hour. */
  TENANTRY_SIGNUP_LIMIT_PER_HOUR: positiveInt.default(5),
  /** How many backups a tenant's users may take per hour (TenantBackupService/CreateBackup). */
  TENANTRY_TENANT_BACKUPS_PER_HOUR: positiveInt.default(4),
  /** How many in-place restores and undos a tenant's users may start per hour (TenantBackupService). */
  TENANTRY_TENANT_RESTORES_PER_HOUR: positiveInt.default(4),
  /** How many downloads of backups a tenant's users may start per hour (TenantBackupService/DownloadBackup). */
  TENANTRY_TENANT_DOWNLOADS_PER_HOUR: positiveInt.default(6),
  /** The `iss` of users' access tokens, as Auth signs them: Platform checks them on its tenant methods. */
  TENANTRY_TOKEN_ISSUER: z.string().min(1).default("tenantry"),
  /**
   * The services that own a schema in every tenant database, as
   * name=host:port (their gRPC ports); by default every such service of
   * services/registry.ts, on this host at its default port.
   */
  TENANTRY_SCHEMA_SERVICES: addressMap.default(addressMap.parse(schemaServicesSetting(registry, (s) => `127.0.0.1:${s.grpcPort}`))),
};

export type PlatformConfig = z.infer<z.ZodObject<typeof platformEnv>>;

/** Reads Platform's configuration; throws a ConfigError naming the variable at fault. */
export function readPlatformConfig(env: NodeJS.ProcessEnv = process.env): PlatformConfig {
  return readConfig(platformEnv, env);
}
