import { Code, ConnectError } from "@connectrpc/connect";
import type { EntityManager } from "@mikro-orm/postgresql";
import pg from "pg";
import { AuthService } from "../../../gen/tenantry/auth/v1/auth_service_pb.js";
import { readAppliedMigrations, type Logger, type SecretBox } from "../../mesh/index.ts";
import type { ClusterRegistry } from "../cluster-registry.ts";
import type { Tenant } from "../entities/tenant.ts";
import type { SchemaServices } from "../schema-services.ts";
import { changeTenant, ownerPasswordContext, recordMigrated, recordPermissionsMerged, rolePasswordContext, statusNames, writeRedoable } from "../stores/index.ts";
import type { DatabaseStock } from "./database-stock.ts";
import type { TemplateDatabases } from "./template-databases.ts";

/**
 * The steps of provisioning a tenant, in order. Each is idempotent, and the
 * last one done is recorded on the tenant, so that a Platform that stops
 * anywhere resumes from there.
 */
export const provisioningSteps = ["register", "create-role", "take-database", "create-database", "secure-database", "migrate-schemas", "bootstrap", "activate"] as const;

export type ProvisioningStep = (typeof provisioningSteps)[number];

/** The steps that undo a provisioning that failed. */
export type RollbackStep = "drop-database" | "drop-role";

/** The step recorded on a tenant while its failed provisioning is undone. */
export const rollingBack = "rollback";

/** What the steps work with, whichever the tenant. */
export interface StepServices {
  clusters: ClusterRegistry;
  schemas: SchemaServices;
  /** The clusters' template databases; undefined to always migrate new databases directly. */
  templates: TemplateDatabases | undefined;
  /** The clusters' stocks of ready databases; undefined to copy or migrate every new database. */
  stock: DatabaseStock | undefined;
  box: SecretBox;
  /** How long one service may take to migrate (or bootstrap) one tenant. */
  migrateTimeoutMs: number;
  log: Logger;
}

/** What a step works on and with. */
export interface StepContext extends StepServices {
  /** The EntityManager `tenant` was read through. */
  em: EntityManager;
  tenant: Tenant;
  /** What earlier steps of this run learned, so that later ones need not ask again. */
  run: {
    /** The newest version of each service's schema. */
    latest?: Map<string, string>;
    /** The version each service's schema has in the tenant's database. */
    versions?: Map<string, string>;
  };
}

/** The work of one step. */
export type StepWork = (context: StepContext) => Promise<void>;

/** A step of provisioning: its work, and for a step that makes something, the rollback step that unmakes it. */
export interface ProvisioningStepDefinition {
  perform: StepWork;
  undoneBy?: RollbackStep;
}

/** Gives the tenant its login role, with the password sealed on its record (again, if the role exists). */
async function createRole({ tenant, clusters, box }: StepContext): Promise<void> {
  const role = pg.escapeIdentifier(tenant.role!);
  const password = pg.escapeLiteral(box.open(tenant.rolePassword!, rolePasswordContext(tenant.id)));
  await clusters.admin(tenant.cluster!, async (admin) => {
    const exists = await admin.query("select 1 from pg_roles where rolname = $1", [tenant.role]);
    await admin.query(`${exists.rowCount === 0 ? "create" : "alter"} role ${role} login password ${password}`);
  });
}

/**
 * Takes a ready database of the cluster's stock as the tenant's, owned by
 * its role, when the stock has one at the newest schema versions; else
 * leaves the database to create-database. The take is one transaction on
 * the cluster: done, the database is the tenant's (and create-database
 * finds it so); not done, the stock database is untouched.
 */
async function takeDatabase({ tenant, clusters, schemas, stock, run }: StepContext): Promise<void> {
  if (stock === undefined || stock.size === 0) {
    return;
  }
  const cluster = tenant.cluster!;
  if ((await databaseOwner(clusters, cluster, tenant.database)) !== undefined) {
    // Taken or made by an earlier run, or someone else's: create-database tells.
    return;
  }
  run.latest = await schemas.latestVersions();
  await stock.take(cluster, run.latest, { database: tenant.database, role: tenant.role! });
}

/**
 * Creates the tenant's database, owned by its role: a copy of the
 * cluster's template when there is a current one, else empty. A database
 * of that name owned by anyone else is left alone: FAILED_PRECONDITION.
 */
async function createDatabase({ tenant, clusters, schemas, templates, log, run }: StepContext): Promise<void> {
  const cluster = tenant.cluster!;
  const owner = await databaseOwner(clusters, cluster, tenant.database);
  if (owner === tenant.role) {
    // Made by an earlier run that stopped before recording it.
    return;
  }
  if (owner !== undefined) {
    throw new ConnectError(
      `a database named "${tenant.database}" already exists on cluster "${cluster}" and belongs to "${owner}", not to the tenant; drop or rename it, then retry`,
      Code.FailedPrecondition,
    );
  }
  const create = (template: string | undefined) =>
    clusters.admin(cluster, (admin) =>
      admin.query(
        `create database ${pg.escapeIdentifier(tenant.database)} owner ${pg.escapeIdentifier(tenant.role!)}${template === undefined ? "" : ` template ${pg.escapeIdentifier(template)}`}`,
      ),
    );
  if (templates === undefined) {
    await create(undefined);
    return;
  }
  run.latest = await schemas.latestVersions();
  await templates.withTemplate(cluster, run.latest, async (template) => {
    if (template === undefined) {
      return create(undefined);
    }
    try {
      await create(template);
    } catch (error) {
      log.warn({ err: error, tenantId: tenant.id }, "copying the template failed; migrating the new database directly");
      await create(undefined);
    }
  });
}

/**
 * Closes the database to everyone but the tenant's role, hands the role
 * what a template copy (or a stock database, one too) brought, and learns
 * which schema versions it holds: the check that a taken or copied
 * database is current, whatever its name or record said.
 */
async function secureDatabase({ tenant, clusters, schemas, templates, run }: StepContext): Promise<void> {
  const role = pg.escapeIdentifier(tenant.role!);
  const database = pg.escapeIdentifier(tenant.database);
  run.versions = await clusters.inDatabase(tenant.cluster!, tenant.database, async (client) => {
    const copied = templates !== undefined && (await client.query("select 1 from pg_roles where rolname = $1", [templates.name])).rowCount !== 0;
    // One transaction, so one commit to wait for.
    await client.query(
      [
        `revoke connect, temporary on database ${database} from public`,
        `alter database ${database} owner to ${role}`,
        // A copy of the template: what the template's role made becomes the tenant's.
        ...(copied ? [`reassign owned by ${pg.escapeIdentifier(templates.name)} to ${role}`] : []),
      ].join(";\n"),
    );
    return readVersions(client, schemas.entries.map((e) => e.name));
  });
}

/** Has every service migrate its schema that is not at its newest version yet, and records the versions in the ledger. */
async function migrateSchemas({ em, tenant, clusters, schemas, migrateTimeoutMs, run }: StepContext): Promise<void> {
  const latest = run.latest ?? (await schemas.latestVersions());
  const versions = run.versions ?? (await clusters.inDatabase(tenant.cluster!, tenant.database, (client) => readVersions(client, schemas.entries.map((e) => e.name))));
  const reported = await Promise.all(
    schemas.entries.map(async ({ name, client }) => {
      if (versions.get(name) === latest.get(name) && latest.get(name) !== undefined) {
        return [name, versions.get(name)!] as const;
      }
      try {
        const result = await client.migrate({ tenantId: tenant.id }, { timeoutMs: migrateTimeoutMs });
        return [name, result.version] as const;
      } catch (error) {
        const cause = ConnectError.from(error);
        throw new ConnectError(`${name} could not migrate the tenant's schema: ${cause.rawMessage}`, cause.code);
      }
    }),
  );
  await writeRedoable(em, async () => {
    for (const [service, version] of reported) {
      await recordMigrated(em, { tenantId: tenant.id, service, version }, { firstAttempt: true });
    }
  });
}

/**
 * Has Auth set the tenant up (the permission catalog every service
 * declares, its roles, and the owner asked for), when Auth is one of the
 * schema services, and records in the ledger which catalog it merged.
 */
async function bootstrap({ em, tenant, schemas, box, migrateTimeoutMs }: StepContext): Promise<void> {
  const auth = schemas.auth;
  if (auth === undefined) {
    return;
  }
  const catalog = await schemas.permissionCatalog();
  const ownerPassword = tenant.ownerPassword == null ? "" : box.open(tenant.ownerPassword, ownerPasswordContext(tenant.id));
  try {
    await auth
      .clientOf(AuthService)
      .bootstrapTenant({ tenantId: tenant.id, ownerEmail: tenant.ownerEmail ?? "", ownerPassword, permissions: catalog.permissions }, { timeoutMs: migrateTimeoutMs });
  } catch (error) {
    const cause = ConnectError.from(error);
    throw new ConnectError(`auth could not bootstrap the tenant: ${cause.rawMessage}`, cause.code);
  }
  await writeRedoable(em, () => recordPermissionsMerged(em, { tenantId: tenant.id, service: auth.name, permissionsDigest: catalog.digest }));
}

/** Makes the tenant ACTIVE, forgetting the owner's password; recorded with its work. */
async function activate({ em, tenant }: StepContext): Promise<void> {
  await changeTenant(em, tenant, { ownerPassword: null, status: statusNames.active, lifecycleStep: null, error: null });
}

/** Drops the tenant's database, only if provisioning made it: then it is owned by the tenant's role. */
async function dropDatabase({ tenant, clusters }: StepContext): Promise<void> {
  const cluster = tenant.cluster!;
  if (tenant.role != null && (await databaseOwner(clusters, cluster, tenant.database)) === tenant.role) {
    await clusters.dropDatabase(cluster, tenant.database);
  }
}

/** Drops the tenant's login role. */
async function dropRole({ tenant, clusters }: StepContext): Promise<void> {
  if (tenant.role != null) {
    await clusters.dropRole(tenant.cluster!, tenant.role);
  }
}

/** What each provisioning step does, and which rollback step undoes it. */
export const provisioningStepTable: { readonly [S in ProvisioningStep]: ProvisioningStepDefinition } = {
  // The record is made with this step (see TenantProvisioner.create).
  register: { perform: async () => {} },
  "create-role": { perform: createRole, undoneBy: "drop-role" },
  "take-database": { perform: takeDatabase, undoneBy: "drop-database" },
  "create-database": { perform: createDatabase, undoneBy: "drop-database" },
  "secure-database": { perform: secureDatabase },
  "migrate-schemas": { perform: migrateSchemas },
  bootstrap: { perform: bootstrap },
  activate: { perform: activate },
};

/** What each rollback step does. Each is idempotent, and harmless where its step was never done. */
export const rollbackStepTable: { readonly [S in RollbackStep]: StepWork } = {
  "drop-database": dropDatabase,
  "drop-role": dropRole,
};

/** The rollback steps, in the order they run: the reverse of the steps they undo. */
export const rollbackSteps: readonly RollbackStep[] = [...new Set(provisioningSteps.toReversed().flatMap((step) => provisioningStepTable[step].undoneBy ?? []))];

/** The owner of a database on a cluster, or undefined when there is no such database. */
async function databaseOwner(clusters: ClusterRegistry, cluster: string, database: string): Promise<string | undefined> {
  const { rows } = await clusters.admin(cluster, (admin) =>
    admin.query<{ owner: string }>("select pg_get_userbyid(datdba) as owner from pg_database where datname = $1", [database]),
  );
  return rows[0]?.owner;
}

/** The newest migration of each service's schema in a database, for the services whose schema has a migration table there. */
async function readVersions(client: pg.Client, services: string[]): Promise<Map<string, string>> {
  const versions = new Map<string, string>();
  for (const service of services) {
    const applied = await readAppliedMigrations(client, service);
    if (applied !== undefined) {
      versions.set(service, applied.at(-1) ?? "");
    }
  }
  return versions;
}
