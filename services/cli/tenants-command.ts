import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { Option, type Command } from "commander";
import {
  CreateTenantResponseSchema,
  DeleteTenantResponseSchema,
  GetTenantResponseSchema,
  ListTenantsResponseSchema,
  Placement,
  ResumeTenantResponseSchema,
  SuspendTenantResponseSchema,
  TenantStatus,
  Tier,
  type Tenant,
} from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import { moveModeNames, moveModeOf, runMove } from "./moves-command.ts";
import { tierNames, tierOf } from "./option-parsers.ts";
import { enumLabel, timeLabel, type Output } from "./output.ts";
import { withPlatform } from "./platform-session.ts";
import { readSecretInput } from "./secret-input.ts";

/** Options of `tenants create`. */
interface CreateOptions {
  name?: string;
  tier?: string;
  cluster?: string;
  region?: string;
  placement?: string;
  ownerEmail?: string;
  ownerPasswordStdin?: boolean;
}

/** Options of `tenants move`. */
interface MoveOptions {
  to?: string;
  placement?: string;
  poolDatabase?: string;
  mode?: string;
  compareDigests?: boolean;
}

/** The most tenants ListTenants returns in one page. */
const pageSize = 500;

/** Adds `tenants create|list|get|suspend|resume|move|delete`. */
export function addTenantsCommand(program: Command): void {
  const tenants = program.command("tenants").description("provision, list, suspend, resume, move and offboard tenants");

  tenants
    .command("create")
    .description("provision a tenant: its own database and login role, every service's schema; ACTIVE when it returns")
    .argument("<id>", "the tenant's id: 3 to 40 lower-case letters, digits and hyphens, starting with a letter")
    .option("--name <name>", "display name (default: the id)")
    .addOption(new Option("--tier <tier>", "plan (default: standard)").choices(tierNames))
    .option("--cluster <name>", "place it on this cluster")
    .option("--region <region>", "place it on an accepting cluster of this region")
    .addOption(new Option("--placement <placement>", "a database of its own (dedicated) or schemas in a shared pool database (pooled); default: its tier's").choices(["dedicated", "pooled"]))
    .option("--owner-email <email>", "the tenant's first user, who gets every permission")
    .option("--owner-password-stdin", "read the owner's password from standard input (else from TENANTRY_OWNER_PASSWORD)")
    .action(async (tenantId: string, options: CreateOptions, command: Command) => {
      const ownerPassword = await ownerPasswordOf(options);
      await withPlatform(command, async ({ platform, output, call }) => {
        const response = await platform.createTenant(
          {
            tenantId,
            displayName: options.name ?? "",
            tier: options.tier === undefined ? Tier.UNSPECIFIED : tierOf(options.tier),
            cluster: options.cluster ?? "",
            region: options.region ?? "",
            placement: options.placement === undefined ? Placement.UNSPECIFIED : options.placement === "pooled" ? Placement.POOLED : Placement.DEDICATED,
            ownerEmail: options.ownerEmail ?? "",
            ownerPassword,
          },
          call,
        );
        output.result(CreateTenantResponseSchema, response, () => printTenant(output, response.tenant));
      });
    });

  tenants
    .command("list")
    .description("list every tenant, ordered by id")
    .action((_options: object, command: Command) =>
      withPlatform(command, async ({ platform, output, call }) => {
        const all: Tenant[] = [];
        let pageToken = "";
        do {
          const page = await platform.listTenants({ pageSize, pageToken }, call);
          all.push(...page.tenants);
          pageToken = page.nextPageToken;
        } while (pageToken !== "");
        output.result(ListTenantsResponseSchema, create(ListTenantsResponseSchema, { tenants: all }), () =>
          output.table(
            ["ID", "NAME", "TIER", "PLACEMENT", "STATUS", "CLUSTER", "CREATED"],
            all.map((t) => [t.tenantId, t.displayName, enumLabel(Tier, t.tier), placementLabel(t), enumLabel(TenantStatus, t.status), t.cluster, timeLabel(t.createTime)]),
            "no tenants",
          ),
        );
      }),
    );

  tenants
    .command("get")
    .description("show one tenant")
    .argument("<id>", "the tenant's id")
    .action((tenantId: string, _options: object, command: Command) =>
      withPlatform(command, async ({ platform, output, call }) => {
        const response = await platform.getTenant({ tenantId }, call);
        output.result(GetTenantResponseSchema, response, () => printTenant(output, response.tenant));
      }),
    );

  tenants
    .command("suspend")
    .description("stop serving an active tenant: every service refuses its calls within a second; its data stays")
    .argument("<id>", "the tenant's id")
    .option("--reason <text>", "why, for the record and the audit log")
    .action((tenantId: string, options: { reason?: string }, command: Command) =>
      withPlatform(command, async ({ platform, output, call }) => {
        const response = await platform.suspendTenant({ tenantId, reason: options.reason ?? "" }, call);
        output.result(SuspendTenantResponseSchema, response, () => printTenant(output, response.tenant));
      }),
    );

  tenants
    .command("resume")
    .description("serve a suspended tenant again")
    .argument("<id>", "the tenant's id")
    .action((tenantId: string, _options: object, command: Command) =>
      withPlatform(command, async ({ platform, output, call }) => {
        const response = await platform.resumeTenant({ tenantId }, call);
        output.result(ResumeTenantResponseSchema, response, () => printTenant(output, response.tenant));
      }),
    );

  tenants
    .command("move")
    .description(
      "move an active tenant's database to another cluster or placement while it is served, and answer once it is served from there " +
        "(or the move failed and was rolled back); its step and tables copied shown as it goes (no deadline unless --timeout)",
    )
    .argument("<id>", "the tenant's id")
    .option("--to <cluster>", "the cluster to move it to; default with --placement or --pool-database: its own")
    .addOption(
      new Option("--placement <placement>", "its placement once moved: a database of its own (dedicated) or schemas in a shared pool database (pooled); default: its own").choices([
        "dedicated",
        "pooled",
      ]),
    )
    .option("--pool-database <name>", "the pool database of that cluster a pooled tenant goes into (another of its own cluster's, to rebalance); default: one chosen as for a new tenant")
    .addOption(
      new Option("--mode <mode>", "online (logical replication; writes wait only for the cutover), copy (a snapshot copy, writes frozen throughout) or auto (online where possible)")
        .choices(moveModeNames)
        .default("auto"),
    )
    .option("--compare-digests", "also compare every table's SHA-256 on both sides at the cutover, not only its rows (the write freeze lasts longer)")
    .action((tenantId: string, options: MoveOptions, command: Command) =>
      withPlatform(command, async (session) => {
        if (options.to === undefined && options.placement === undefined && options.poolDatabase === undefined) {
          throw new ConnectError("say where the tenant goes: --to <cluster>, --placement dedicated|pooled, --pool-database <name>, or several", Code.InvalidArgument);
        }
        const targetCluster = options.to ?? (await session.platform.getTenant({ tenantId }, session.call)).tenant?.cluster ?? "";
        const targetPlacement = options.placement === undefined ? Placement.UNSPECIFIED : options.placement === "pooled" ? Placement.POOLED : Placement.DEDICATED;
        await runMove(session, {
          tenantId,
          targetCluster,
          targetPlacement,
          targetPoolDatabase: options.poolDatabase ?? "",
          mode: moveModeOf(options.mode ?? "auto"),
          compareDigests: options.compareDigests === true,
        });
      }),
    );

  tenants
    .command("delete")
    .description("offboard a tenant: export its data, revoke its login, drop its database after the grace period")
    .argument("<id>", "the tenant's id")
    .action((tenantId: string, _options: object, command: Command) =>
      withPlatform(command, async ({ platform, output, call }) => {
        const response = await platform.deleteTenant({ tenantId }, call);
        output.result(DeleteTenantResponseSchema, response, () => printTenant(output, response.tenant));
      }),
    );
}

/** The owner's password, required with --owner-email and refused without it. */
async function ownerPasswordOf(options: CreateOptions): Promise<string> {
  if (options.ownerEmail === undefined) {
    if (options.ownerPasswordStdin) {
      throw new ConnectError("--owner-password-stdin is for the owner named by --owner-email, which is missing", Code.InvalidArgument);
    }
    return "";
  }
  const password = await readSecretInput({
    fromStdin: options.ownerPasswordStdin === true,
    stdinOption: "--owner-password-stdin",
    envName: "TENANTRY_OWNER_PASSWORD",
    env: process.env,
  });
  if (password === undefined) {
    throw new ConnectError("--owner-email needs the owner's password: pipe it in with --owner-password-stdin or set TENANTRY_OWNER_PASSWORD", Code.InvalidArgument);
  }
  return password;
}

/** A tenant's placement as the CLI shows it ("dedicated", "pooled"), empty when Platform did not say. */
function placementLabel(tenant: Tenant): string {
  return tenant.placement === Placement.UNSPECIFIED ? "" : enumLabel(Placement, tenant.placement);
}

function printTenant(output: Output, tenant: Tenant | undefined): void {
  if (tenant === undefined) {
    return;
  }
  output.record([
    ["id", tenant.tenantId],
    ["name", tenant.displayName],
    ["tier", enumLabel(Tier, tenant.tier)],
    ["placement", placementLabel(tenant)],
    ["status", enumLabel(TenantStatus, tenant.status)],
    ["cluster", tenant.cluster],
    ["database", tenant.database],
    ["created", timeLabel(tenant.createTime)],
    ["updated", timeLabel(tenant.updateTime)],
    ["suspended because", tenant.suspendedReason],
    ["error", tenant.error],
    ["purged after", timeLabel(tenant.purgeTime)],
    ["export", tenant.exportPath],
    ["final backup", tenant.finalBackupId],
    ["moving", tenant.move === undefined ? "" : `to ${tenant.move.targetCluster}, ${tenant.move.step} (move ${tenant.move.moveId})`],
  ]);
}
