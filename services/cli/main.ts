#!/usr/bin/env node
import { Command, CommanderError, Option } from "commander";
import { registeredService } from "../registry.ts";
import { addBackupsCommand } from "./backups-command.ts";
import { addClustersCommand } from "./clusters-command.ts";
import { exitCodeHelp, exitCodeOf } from "./exit-codes.ts";
import { addFleetCommand } from "./fleet-command.ts";
import { addMigrateCommand } from "./migrate-command.ts";
import { addMovesCommand } from "./moves-command.ts";
import { addNewServiceCommand } from "./new-service-command.ts";
import { parseDuration } from "./option-parsers.ts";
import { Output } from "./output.ts";
import { addTenantsCommand } from "./tenants-command.ts";

const credentialHelp = `
The operator token is read from TENANTRY_OPERATOR_TOKEN, else from
<TENANTRY_DATA_DIR, default .tenantry>/operator.token, where Platform writes it.
Passwords are read from standard input (--…-password-stdin) or the environment,
never from arguments.`;

const program = new Command("tenantry")
  .description("Operate a Tenantry mesh through Platform: tenants, backups, moves, fleet migrations, clusters; and add a service to this checkout (new-service).")
  .addOption(new Option("--platform <host:port>", "Platform's gRPC address").env("TENANTRY_PLATFORM_ADDRESS").default(`127.0.0.1:${registeredService("platform").grpcPort}`))
  .option("--json", "machine-readable output: responses as proto JSON on stdout, errors as JSON on stderr")
  .option("--timeout <duration>", "deadline of each call, such as 30s or 2m (default: 60s; migrate, tenants move and backups create, restore, undo, verify: none)", parseDuration)
  // Commands below inherit both: errors reach the exit code mapping instead of process.exit.
  .exitOverride()
  .configureOutput({
    outputError: (message, write) =>
      write(program.opts().json === true ? `${JSON.stringify({ error: { code: "INVALID_ARGUMENT", message: message.replace(/^error: /, "").trim() } })}\n` : message),
  })
  .addHelpText("after", `${credentialHelp}\n${exitCodeHelp}`);

addTenantsCommand(program);
addBackupsCommand(program);
addMovesCommand(program);
addMigrateCommand(program);
addFleetCommand(program);
addClustersCommand(program);
addNewServiceCommand(program);

try {
  await program.parseAsync();
} catch (error) {
  process.exitCode = exitCodeOf(error);
  // Commander has already printed its own errors and help.
  if (!(error instanceof CommanderError)) {
    new Output({ json: program.opts().json === true }).error(error);
  }
}
