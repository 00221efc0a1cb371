import type { Command } from "commander";
import { fileURLToPath } from "node:url";
import { checkEntityName, checkServiceName } from "./new-service/service-naming.ts";
import { Output } from "./output.ts";

/** The checkout this CLI runs from, to which new-service adds. */
const root = fileURLToPath(new URL("../..", import.meta.url));

/** Adds `new-service`. */
export function addNewServiceCommand(program: Command): void {
  program
    .command("new-service")
    .description(
      "add a data-owning service to this checkout: its folder under services/, its contract under proto/, its entry in services/registry.ts, " +
        "and gen/ and deploy/ made again from them (see docs/adding-a-service.md); needs no running mesh",
    )
    .argument("<name>", "the service's name: lower-case letters, digits and hyphens, starting with a letter, such as billing or audit-log", checkServiceName)
    .option("--entity <name>", "what it keeps, singular: its table, messages and methods are named after it, such as invoice or line-item", checkEntityName, "item")
    .action(async (name: string, options: { entity: string }, command: Command) => {
      const output = new Output({ json: command.optsWithGlobals<{ json?: boolean }>().json === true });
      // Loaded only for this command: the others need none of it.
      const { newService } = await import("./new-service/new-service.ts");
      const made = await newService({ root, name, entity: options.entity, onStep: (step) => output.note(step) });
      const { naming } = made;
      if (output.json) {
        output.value({ service: naming.name, grpcPort: made.grpcPort, httpPort: made.httpPort, permissions: made.permissions, files: made.files });
        return;
      }
      output.record([
        ["service", `${naming.name} (tenantry.${naming.package}.v1.${naming.Pascal}Service, schema ${naming.name} in every tenant database)`],
        ["ports", `gRPC ${made.grpcPort}, HTTP ${made.httpPort}`],
        ["methods", `Create${naming.Entity}, List${naming.Entities}`],
        ["permissions", made.permissions.join(", ")],
      ]);
      output.line(`\nwrote ${made.files.join("\n      ")}\nchanged services/registry.ts; made gen/ and deploy/ again`);
      output.line(
        `\nNext: npx vitest run services/${naming.name}, then npm run check; shape the contract in ${made.files[0]} and run npm run gen.` +
          "\nThe steps after that: docs/adding-a-service.md.",
      );
    });
}
