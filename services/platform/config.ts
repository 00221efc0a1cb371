import { z } from "zod";
import { addressMap, commonEnv, ConfigError, port, positiveInt, readConfig } from "../mesh/index.ts";
import { registeredService, registry, schemaServicesSetting } from "../registry.ts";
import { CronSchedule } from "./backups/cron-schedule.ts";
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

/**
 * Each tier's default placement unless configured otherwise: STANDARD
 * tenants (sign-ups among them) pooled, PREMIUM and ENTERPRISE ones in a
 * database of their own.
 */
const defaultTierPlacements = new Map<string, PlacementName>([
  ["standard", "pooled"],
  ["premium", "dedicated"],
  ["enterprise", "dedicated"],
]);

/** A placement as configured and recorded. */
export type PlacementName = "dedicated" | "pooled";

/** `tier=placement,…` such as `standard=pooled`. Tiers not named keep their defaults. */
const tierPlacements = z.string().transform((s, ctx) => {
  const placements = new Map(defaultTierPlacements);
  for (const item of s.split(",").map((i) => i.trim()).filter((i) => i !== "")) {
    const m = /^(standard|premium|enterprise)=(dedicated|pooled)$/i.exec(item);
    if (m === null) {
      ctx.addIssue({ code: "custom", message: `expected tier=placement such as standard=pooled (placements: dedicated, pooled), got "${item}"` });
      return z.NEVER;
    }
    placements.set(m[1]!.toLowerCase(), m[2]!.toLowerCase() as PlacementName);
  }
  return placements;
});

/** A size per second such as `20MB` or `20MB/s` (B, KB, MB, GB of 1024), or `0` / `unlimited` for no limit; in bytes per second. */
const bytesPerSecond = z.string().transform((s, ctx) => {
  const m = /^\s*(?:(\d+(?:\.\d+)?)\s*([kmg]?b)(?:\/s)?|(unlimited|0))\s*$/i.exec(s);
  if (m === null) {
    ctx.addIssue({ code: "custom", message: "expected a size read per second such as 20MB (KB, MB, GB), or 0 or unlimited for no limit" });
    return z.NEVER;
  }
  return m[1] === undefined ? 0 : Math.round(Number(m[1]) * units[m[2]!.toLowerCase()]!);
});

/**
 * A backup's pace, in bytes per second: TENANTRY_BACKUP_MAX_RATE, or by
 * default 12.5 MB a second per core. A backup took about 18 ms of CPU per
 * MB of table data when it gzipped (reading, hashing, compressing,
 * encrypting; measured on bench:backup's tenant); its compressing threads
 * take 0.7 of theirs with zstd, and only the CPU nothing else wants
 * (SCHED_IDLE), so that is at most about a fifth of the machine's CPU,
 * however many cores it has; 0 for no limit.
 */
export function backupRateOf(configured: number | undefined, cores: number): number {
  return configured ?? 12.5 * 1024 ** 2 * cores;
}

/** A backup schedule: a five-field cron pattern read in UTC (see {@link CronSchedule}), or `off` for none. */
const backupSchedule = z.string().transform((s, ctx) => {
  if (s.trim().toLowerCase() === "off") {
    return null;
  }
  try {
    return new CronSchedule(s);
  } catch (error) {
    ctx.addIssue({ code: "custom", message: `expected a cron pattern of five fields (minute hour day-of-month month day-of-week, UTC) such as "0 3 * * *", or "off": ${(error as Error).message}` });
    return z.NEVER;
  }
});

/** How many of a scheduled run's backups are verified: a count such as `3`, or a share such as `5%` (rounded up). */
export type VerifySample = { count: number } | { percent: number };

const verifySample = z.string().transform((s, ctx): VerifySample => {
  const m = /^\s*(?:(\d+)|(\d+(?:\.\d+)?)\s*%)\s*$/.exec(s);
  if (m === null || Number(m[2] ?? 0) > 100) {
    ctx.addIssue({ code: "custom", message: `expected a count of backups such as 3, or a share of them from 0% to 100% such as 5%` });
    return z.NEVER;
  }
  return m[1] === undefined ? { percent: Number(m[2]) } : { count: Number(m[1]) };
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
  /** Pooled tenants the first cluster may hold (counted apart from its capacity), when it is registered. */
  TENANTRY_DEFAULT_CLUSTER_POOL_CAPACITY: positiveInt.default(20000),
  /** Region label of the first cluster, when it is registered. */
  TENANTRY_DEFAULT_CLUSTER_REGION: z.string().regex(/^[a-z0-9-]{0,40}$/, "lower-case letters, digits and hyphens").default("local"),
  /** Copy new tenant databases from a per-cluster template ("true") or migrate each one ("false"). */
  TENANTRY_TEMPLATE_DATABASES: z.enum(["true", "false"]).default("true").transform((v) => v === "true"),
  /**
   * Ready databases kept on each cluster that accepts tenants, copies of its
   * template at the newest schema versions: a new tenant takes one instead
   * of having its database copied. Refilled in the background; 0 keeps none
   * (and drops those left). Needs TENANTRY_TEMPLATE_DATABASES.
   */
  TENANTRY_DATABASE_STOCK: z.coerce.number().int().min(0).max(100).default(3),
  /**
   * Ready slots kept in each pool database with room: a NOLOGIN role and
   * its schemas, migrated to the newest versions, that a new pooled tenant
   * takes by renaming them instead of having them made and migrated.
   * Refilled in the background; 0 keeps none (and drops those left).
   */
  TENANTRY_POOLED_STOCK: z.coerce.number().int().min(0).max(100).default(3),
  /** Users and storage each tier allows, carried in every tenant's route. */
  TENANTRY_TIER_LIMITS: tierLimits.default(defaultTierLimits),
  /**
   * Each tier's placement for tenants created without one: `dedicated` (a
   * database of the tenant's own) or `pooled` (schemas of its own in a
   * pool database), as tier=placement,… such as `standard=dedicated`.
   * Tiers not named keep their defaults: standard=pooled,
   * premium=dedicated, enterprise=dedicated.
   */
  TENANTRY_TIER_PLACEMENTS: tierPlacements.default(defaultTierPlacements),
  /**
   * Whether changing a tenant's tier to one whose placement
   * (TENANTRY_TIER_PLACEMENTS) differs from the tenant's starts a move to
   * that placement on its cluster (UpdateTenant returns it).
   */
  TENANTRY_TIER_CHANGE_MOVES: z.enum(["true", "false"]).default("true").transform((v) => v === "true"),
  /** How many pooled tenants one pool database holds at most; new pool databases are created as needed. */
  TENANTRY_POOL_MAX_TENANTS: positiveInt.default(1000),
  /** How many pooled tenants of one pool database a fleet migration migrates at once, at least (at most 32). */
  TENANTRY_FLEET_POOL_CONCURRENCY: positiveInt.max(32).default(8),
  /**
   * How many pooled tenants a fleet migration migrates at once in all, over
   * every pool database (each taking TENANTRY_FLEET_POOL_CONCURRENCY or
   * more): a service's connections to the pool databases must hold them
   * beside its traffic.
   */
  TENANTRY_FLEET_POOLED_CONCURRENCY: positiveInt.max(256).default(16),
  /** How long after DeleteTenant a tenant's database and role are dropped; 0 drops them at once. */
  TENANTRY_OFFBOARDING_GRACE_MS: z.coerce.number().int().min(0).default(7 * 24 * 3600 * 1000),
  /** How often Platform looks for offboarded tenants past their grace period. */
  TENANTRY_OFFBOARDING_CHECK_INTERVAL_MS: positiveInt.default(60_000),
  /** How long an in-place restore keeps the database it replaced (refusing connections), so that UndoRestore can bring it back; then it is dropped. */
  TENANTRY_RESTORE_KEEP_MS: z.coerce.number().int().min(0).default(24 * 3600 * 1000),
  /** How long a moved tenant's source database is kept, closed to connections, before it is dropped. */
  TENANTRY_MOVE_KEEP_MS: z.coerce.number().int().min(0).default(24 * 3600 * 1000),
  /**
   * How much table data the initial copy of an online move copies per
   * second: its pace, which bounds what the move takes from the other
   * tenants of both servers (the target's above all, which loads, logs and
   * indexes every row, and writes it to disk). 0 or unlimited for no
   * limit. At 3 MB a second other tenants kept 0.82–1.00 of their reads
   * in bench:move (2 cores, both servers on them), at 8 MB 0.58–0.79.
   */
  TENANTRY_MOVE_MAX_RATE: bytesPerSecond.default(3 * 1024 ** 2),
  /** How many connections read a tenant's tables at once while it is backed up (besides the one holding the snapshot). */
  TENANTRY_BACKUP_WORKERS: positiveInt.default(2),
  /**
   * How much table data a backup reads per second, its workers together:
   * its pace, which bounds the CPU it takes from the tenants served
   * meanwhile (and what it reads from the database server). Unset, 12.5 MB a
   * second per core of Platform's machine (see {@link backupRateOf}).
   */
  TENANTRY_BACKUP_MAX_RATE: bytesPerSecond.optional(),
  /**
   * The bucket of an S3-compatible store that Platform keeps backups in
   * (it must exist); unset, backups are files under `<data dir>/backups`.
   * The other TENANTRY_BACKUP_S3_* settings are read only with it.
   */
  TENANTRY_BACKUP_S3_BUCKET: z
    .string()
    .regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, "expected a bucket name: 3 to 63 lower-case letters, digits, dots and hyphens")
    .optional(),
  /** The region requests are signed for: the bucket's on AWS (such as eu-west-1); what the store says elsewhere (often us-east-1). Required with the bucket. */
  TENANTRY_BACKUP_S3_REGION: z.string().regex(/^[a-z0-9-]{1,64}$/, "expected a region such as eu-west-1: lower-case letters, digits and hyphens").optional(),
  /** The store's URL, such as https://minio.example:9000; AWS S3 when unset. */
  TENANTRY_BACKUP_S3_ENDPOINT: z
    .url({ protocol: /^https?$/, error: "expected an http:// or https:// URL" })
    .refine((url) => new URL(url).username === "" && new URL(url).password === "", "keys go in TENANTRY_BACKUP_S3_ACCESS_KEY_ID and TENANTRY_BACKUP_S3_SECRET_ACCESS_KEY, not in the URL")
    .optional(),
  /** Address the bucket in the URL's path instead of its host name ("true" for most stores other than AWS). */
  TENANTRY_BACKUP_S3_FORCE_PATH_STYLE: z.enum(["true", "false"]).default("false").transform((v) => v === "true"),
  /** The access key's id; with the secret below, or neither for the AWS SDK's default credentials (AWS_* variables, web identity, instance roles). */
  TENANTRY_BACKUP_S3_ACCESS_KEY_ID: z.string().min(1).optional(),
  /** The access key's secret (redacted from logs and configuration errors). */
  TENANTRY_BACKUP_S3_SECRET_ACCESS_KEY: z.string().min(1).optional(),
  /** Where in the bucket backups go: keys are `<prefix>/<tenant>/<backup id>/<file>`; "/" for the bucket's root. */
  TENANTRY_BACKUP_S3_PREFIX: z
    .string()
    .transform((s) => s.replace(/^\/+|\/+$/g, ""))
    .refine((s) => s === "" || s.split("/").every((part) => /^[A-Za-z0-9_-][A-Za-z0-9._-]*$/.test(part)), "expected folder names of letters, digits, dots, hyphens and underscores, separated by /")
    .default("backups"),
  /** When every tenant is backed up (ACTIVE and SUSPENDED ones), unless its tier has a schedule of its own: a cron pattern in UTC, or "off". */
  TENANTRY_BACKUP_SCHEDULE: backupSchedule.default(new CronSchedule("0 3 * * *")),
  /** The schedule of STANDARD tenants, instead of TENANTRY_BACKUP_SCHEDULE. */
  TENANTRY_BACKUP_SCHEDULE_STANDARD: backupSchedule.optional(),
  /** The schedule of PREMIUM tenants, instead of TENANTRY_BACKUP_SCHEDULE. */
  TENANTRY_BACKUP_SCHEDULE_PREMIUM: backupSchedule.optional(),
  /** The schedule of ENTERPRISE tenants, instead of TENANTRY_BACKUP_SCHEDULE. */
  TENANTRY_BACKUP_SCHEDULE_ENTERPRISE: backupSchedule.optional(),
  /** How long after a schedule fires its tenants' backups are spread over (each tenant at a time of its own within it); 0 takes them all at once. */
  TENANTRY_BACKUP_WINDOW_MS: z.coerce.number().int().min(0).default(2 * 3600 * 1000),
  /** How many scheduled backups (and verification drills) run at once on one cluster. */
  TENANTRY_BACKUP_CONCURRENCY_PER_CLUSTER: positiveInt.default(2),
  /** Retention: a tenant's newest SUCCEEDED backups kept whatever their age. */
  TENANTRY_BACKUP_KEEP_LAST: positiveInt.default(7),
  /** Retention: every backup younger than this many days is kept; older ones beyond the last TENANTRY_BACKUP_KEEP_LAST are deleted. */
  TENANTRY_BACKUP_KEEP_DAYS: z.coerce.number().min(0).default(30),
  /** How many backups of each scheduled run are verified by a restore drill. */
  TENANTRY_BACKUP_VERIFY_SAMPLE: verifySample.default({ percent: 5 }),
  /**
   * How long a write freeze's lease lasts: Platform renews it every third of
   * that while the freeze lasts, and services end a freeze whose lease ran
   * out, so a Platform that stops leaves no tenant frozen for longer.
   */
  TENANTRY_FREEZE_LEASE_MS: positiveInt.default(5000),
  /** How long a write freeze waits for every service instance to acknowledge it before it is lifted and fails with UNAVAILABLE. */
  TENANTRY_FREEZE_ACK_TIMEOUT_MS: positiveInt.default(5000),
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
  const config = readConfig(platformEnv, env);
  const problems = backupStorageProblems(config, env);
  if (problems.length > 0) {
    throw new ConfigError(problems.join("\n"));
  }
  return config;
}

/** The TENANTRY_BACKUP_S3_* settings that do not go together, one line each. */
function backupStorageProblems(config: PlatformConfig, env: NodeJS.ProcessEnv): string[] {
  const bucket = "TENANTRY_BACKUP_S3_BUCKET";
  const given = (name: string) => env[name] !== undefined && env[name] !== "";
  if (config.TENANTRY_BACKUP_S3_BUCKET === undefined) {
    return Object.keys(platformEnv)
      .filter((name) => name.startsWith("TENANTRY_BACKUP_S3_") && name !== bucket && given(name))
      .map((name) => `${name}: set, but ${bucket} is not (backups go to the data directory): set the bucket too, or unset this`);
  }
  const problems: string[] = [];
  if (config.TENANTRY_BACKUP_S3_REGION === undefined) {
    problems.push(`TENANTRY_BACKUP_S3_REGION: required with ${bucket}: the bucket's region, such as eu-west-1 (not set)`);
  }
  const [id, secret] = ["TENANTRY_BACKUP_S3_ACCESS_KEY_ID", "TENANTRY_BACKUP_S3_SECRET_ACCESS_KEY"] as const;
  if (given(id) !== given(secret)) {
    const [set, missing] = given(id) ? [id, secret] : [secret, id];
    problems.push(`${missing}: required with ${set}, or unset both for the SDK's default credentials (not set)`);
  }
  return problems;
}
