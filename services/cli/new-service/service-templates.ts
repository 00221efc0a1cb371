import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { ServiceNaming } from "./service-naming.ts";

const templatesDir = fileURLToPath(new URL("templates", import.meta.url));

/** What fills a new service's templates: its names, and the ports it is given. */
export type TemplateValues = ServiceNaming & { readonly grpcPort: number; readonly httpPort: number };

/**
 * Each template of a new service's files (in templates/, text, so that the
 * repository's type check never reads them) and the file it becomes, from
 * the repository root. Both are filled from {@link TemplateValues}.
 */
export const serviceFiles: readonly { template: string; file: string }[] = [
  { template: "service.proto.tmpl", file: "proto/tenantry/{{package}}/v1/{{package}}_service.proto" },
  { template: "main.ts.tmpl", file: "services/{{name}}/main.ts" },
  { template: "start.ts.tmpl", file: "services/{{name}}/start.ts" },
  { template: "config.ts.tmpl", file: "services/{{name}}/config.ts" },
  { template: "service.ts.tmpl", file: "services/{{name}}/{{name}}.ts" },
  { template: "rpc-service.ts.tmpl", file: "services/{{name}}/{{name}}-service.ts" },
  { template: "rpc-service.db.spec.ts.tmpl", file: "services/{{name}}/{{name}}-service.db.spec.ts" },
  { template: "domain.ts.tmpl", file: "services/{{name}}/{{entities_file}}.ts" },
  { template: "rules.ts.tmpl", file: "services/{{name}}/{{entity_file}}-rules.ts" },
  { template: "rules.spec.ts.tmpl", file: "services/{{name}}/{{entity_file}}-rules.spec.ts" },
  { template: "entity.ts.tmpl", file: "services/{{name}}/entities/{{entity_file}}.ts" },
  { template: "migration.ts.tmpl", file: "services/{{name}}/migrations/create-{{entities_file}}.ts" },
  { template: "migrations-index.ts.tmpl", file: "services/{{name}}/migrations/index.ts" },
];

/** The entry of services/registry.ts's list that registers the service. */
export const registryEntryTemplate = "registry-entry.ts.tmpl";

/** A template's text with every `{{key}}` replaced by its value; throws naming a key that has none. */
export function fill(template: string, values: TemplateValues): string {
  return template.replace(/\{\{(\w+)\}\}/g, (_, key: string) => {
    if (!Object.hasOwn(values, key)) {
      throw new Error(`the templates name {{${key}}}, which is not one of a new service's names (services/cli/new-service/service-naming.ts)`);
    }
    return String(values[key as keyof TemplateValues]);
  });
}

/** A template of templates/, filled. */
export function filledTemplate(template: string, values: TemplateValues): string {
  return fill(readFileSync(path.join(templatesDir, template), "utf8"), values);
}

/**
 * A new service's files by path from the repository root, filled. Throws
 * when two would be one file (an entity named like the service), naming them.
 */
export function serviceFilesOf(values: TemplateValues): Map<string, string> {
  const files = new Map<string, string>();
  for (const { template, file } of serviceFiles) {
    const target = fill(file, values);
    if (files.has(target)) {
      throw new Error(`two of the new service's files would be ${target}, as the entity "${values.entity_file}" is named like the service`);
    }
    files.set(target, filledTemplate(template, values));
  }
  return files;
}
