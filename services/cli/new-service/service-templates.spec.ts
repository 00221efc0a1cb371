import { readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { serviceNaming } from "./service-naming.ts";
import { fill, filledTemplate, registryEntryTemplate, serviceFiles, serviceFilesOf, type TemplateValues } from "./service-templates.ts";

const values: TemplateValues = { ...serviceNaming("audit-log", "line-item"), grpcPort: 50054, httpPort: 8084 };

// That the filled templates compile, pass npm run check and their own specs
// is shown by e2e/new-service.spec.ts, which adds a service to a copy of the
// checkout; these specs need no copy.
describe("a new service's templates", () => {
  it("are each used once, and fill without a placeholder left", () => {
    const templates = readdirSync(fileURLToPath(new URL("templates", import.meta.url))).sort();
    expect([...serviceFiles.map((f) => f.template), registryEntryTemplate].sort()).toEqual(templates);
    for (const [file, text] of serviceFilesOf(values)) {
      expect(text, file).not.toMatch(/\{\{|\}\}/);
    }
    expect(filledTemplate(registryEntryTemplate, values)).toContain('name: "audit-log",\n    grpcPort: 50054,\n    httpPort: 8084,');
  });

  it("make the service's folder, its proto file in the package's folder, and nothing else", () => {
    const files = [...serviceFilesOf(values).keys()];
    expect(files[0]).toBe("proto/tenantry/audit_log/v1/audit_log_service.proto");
    expect(files.slice(1).every((file) => file.startsWith("services/audit-log/"))).toBe(true);
    expect(files).toContain("services/audit-log/line-items.ts");
    expect(files).toContain("services/audit-log/migrations/create-line-items.ts");
  });

  it("refuse a placeholder that is not a name, and an entity that names a file like another", () => {
    expect(() => fill("{{name}} {{colour}}", values)).toThrow("the templates name {{colour}}");
    expect(() => serviceFilesOf({ ...serviceNaming("items", "item"), grpcPort: 1, httpPort: 2 })).toThrow(
      `two of the new service's files would be services/items/items.ts, as the entity "item" is named like the service`,
    );
  });
});
