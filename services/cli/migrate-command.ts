import { create, toJson } from "@bufbuild/protobuf";
import { Option, type Command } from "commander";
import {
  MigrateTenantsResponseSchema,
  MigrationOutcome,
  MigrationTotalsSchema,
  type MigrateTenantsResponse,
} from "../../gen/tenantry/platform/v1/fleet_service_pb.js";
import { Tier } from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import { ExitCode } from "./exit-codes.ts";
import { MigrationProgress } from "./migration-progress.ts";
import { repeatable, tierNames, tierOf, wholeNumber } from "./option-parsers.ts";
import { withPlatform } from "./platform-session.ts";

/** Options of `migrate`. */
interface MigrateOptions {
  tenant?: string[];
  tier?: string;
  cluster?: string;
  behindOnly?: boolean;
  concurrency?: number;
  dryRun?: boolean;
}

/** Adds `migrate`: FleetService.MigrateTenants with live progress and a summary of failures. */
export function addMigrateCommand(program: Command): void {
  program
    .command("migrate")
    .description(
      "bring tenants' schemas to every service's newest version; goes on past failing tenants, and is safe to stop and run again " +
        "(exit code 1 when any tenant failed)",
    )
    .option("--tenant <id>", "only this tenant (repeat for more)", repeatable)
    .addOption(new Option("--tier <tier>", "only tenants of this plan").choices(tierNames))
    .option("--cluster <name>", "only tenants on this cluster")
    .option("--behind-only", "only tenants the ledger shows behind or failed")
    .option("--concurrency <n>", "tenants migrated at once on each cluster, 1 to 32 (default: 4)", wholeNumber(1, 32))
    .option("--dry-run", "report what would be migrated, changing nothing")
    .action((options: MigrateOptions, command: Command) =>
      withPlatform(command, async ({ fleet, output, options: global }) => {
        const dryRun = options.dryRun === true;
        const progress = new MigrationProgress({ stream: process.stderr, live: process.stderr.isTTY === true });
        const stop = new AbortController();
        const interrupt = () => stop.abort();
        process.once("SIGINT", interrupt);
        let totals = create(MigrationTotalsSchema);
        const failures: MigrateTenantsResponse[] = [];
        const wouldMigrate: MigrateTenantsResponse[] = [];
        try {
          const events = fleet.migrateTenants(
            {
              tenantIds: options.tenant ?? [],
              tier: options.tier === undefined ? Tier.UNSPECIFIED : tierOf(options.tier),
              cluster: options.cluster ?? "",
              onlyBehind: options.behindOnly === true,
              concurrencyPerCluster: options.concurrency ?? 0,
              dryRun,
            },
            // A fleet's migration may rightly take long: no deadline unless --timeout asks for one.
            { signal: stop.signal, timeoutMs: global.timeout },
          );
          for await (const event of events) {
            progress.update(event);
            totals = event.totals ?? totals;
            if (event.outcome === MigrationOutcome.FAILED) {
              failures.push(event);
            } else if (event.outcome === MigrationOutcome.WOULD_MIGRATE) {
              wouldMigrate.push(event);
            }
          }
        } catch (error) {
          if (!stop.signal.aborted) {
            throw error;
          }
          progress.stop();
          output.note(`interrupted after ${totals.done} of ${totals.total} tenant schemas; run it again to finish (current ones are skipped)`);
          process.exitCode = ExitCode.Interrupted;
          return;
        } finally {
          process.off("SIGINT", interrupt);
          progress.stop();
        }

        if (output.json) {
          const events = (list: MigrateTenantsResponse[]) =>
            list.map((event) => toJson(MigrateTenantsResponseSchema, { ...event, totals: undefined }, { alwaysEmitImplicit: true }));
          output.value({
            dryRun,
            totals: toJson(MigrationTotalsSchema, totals, { alwaysEmitImplicit: true }),
            failures: events(failures),
            ...(dryRun ? { wouldMigrate: events(wouldMigrate) } : {}),
          });
        } else if (totals.total === 0) {
          output.line("no tenant schemas selected");
        } else if (dryRun) {
          output.line(`dry run: ${wouldMigrate.length} of ${totals.total} tenant schemas would be migrated, ${totals.current} are current`);
          output.table(
            ["TENANT", "SERVICE", "FROM", "TO"],
            wouldMigrate.map((e) => [e.tenantId, e.service, e.fromVersion || "(none)", e.toVersion]),
            "",
          );
        } else {
          output.line(`${totals.total} tenant schemas: ${totals.migrated} migrated, ${totals.current} current, ${totals.failed} failed`);
        }
        if (!output.json && failures.length > 0) {
          output.line("");
          output.table(["TENANT", "SERVICE", "ERROR"], failures.map((e) => [e.tenantId, e.service, e.error]), "");
        }
        if (failures.length > 0) {
          process.exitCode = ExitCode.Failure;
        }
      }),
    );
}
