// The import rules of services/mesh, checked by `npm run check`:
// - code outside services/mesh imports it only through services/mesh/index.ts,
//   or run-main.ts (a service main's entry: it loads no pg);
// - each module of services/mesh sits in one of the layer folders, or is one
//   of the top-level files;
// - a layer folder imports only itself and the folders below it, never a
//   top-level file; the top-level files may import any layer;
// - no import circle inside services/mesh;
// - nothing run-main.ts loads imports pg or MikroORM, so that a main starts
//   telemetry before pg is loaded (else SQL gets no spans);
// - Platform's and Auth's generated contracts are imported by one file each.
// Specs (`*.spec.ts`) test from outside their layer: they may import any mesh
// module, and only their place in the tree is checked.
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** The folders of services/mesh, lowest first: each imports only itself and those before it. */
export const meshLayers = ["runtime", "telemetry", "wire", "access", "tenancy", "client", "server"];

/** The modules at the top of services/mesh, above every layer. */
export const meshTopFiles = ["index.ts", "run-main.ts", "tenant-service.ts"];

/** What code outside services/mesh may import from it. */
const meshEntries = ["index.ts", "run-main.ts"];

/** The entry a main imports before telemetry starts, and the packages nothing it loads may import. */
const mainEntry = "run-main.ts";
const loadsPg = /^(pg|pg-[\w-]+|@mikro-orm\/[\w-]+)$/;

/** Generated contracts of other services, and the one mesh module that may import each. */
const contractOwners: { contract: string; owner: string }[] = [
  { contract: "gen/tenantry/platform/", owner: "tenancy/platform-routes.ts" },
  { contract: "gen/tenantry/auth/", owner: "access/auth-key-sets.ts" },
];

const skippedDirs = new Set(["node_modules", "gen"]);

/** An import or re-export of one module by another. */
interface Import {
  /** The text between the quotes. */
  specifier: string;
  /** The imported file, relative to the root (with `/`), for a relative specifier; else undefined. */
  target: string | undefined;
  /** `import type …` / `export type …`: erased, loads nothing. */
  typeOnly: boolean;
}

const staticImport = /^[ \t]*(import|export)[ \t]+(type[ \t]+)?([^;'"]*?[ \t\n]from[ \t]*)?["']([^"']+)["']/gm;
const dynamicImport = /\bimport\(\s*["']([^"']+)["']\s*\)/g;

/** The imports of a module's source: static (`import`/`export … from`) and dynamic with a literal. */
export function importsOf(source: string, file: string): Import[] {
  const imports: Import[] = [];
  const add = (specifier: string, typeOnly: boolean) => {
    const target = specifier.startsWith(".") ? path.posix.normalize(path.posix.join(path.posix.dirname(file), specifier)) : undefined;
    imports.push({ specifier, target, typeOnly });
  };
  for (const match of source.matchAll(staticImport)) {
    // An export imports only with `from`; `import "x"` loads x for its effects.
    if (match[1] === "export" && match[3] === undefined) {
      continue;
    }
    add(match[4]!, match[2] !== undefined);
  }
  for (const match of source.matchAll(dynamicImport)) {
    add(match[1]!, false);
  }
  return imports;
}

function sourceFiles(root: string, dir = ""): string[] {
  const files: string[] = [];
  for (const entry of readdirSync(path.join(root, dir), { withFileTypes: true })) {
    const relative = dir === "" ? entry.name : `${dir}/${entry.name}`;
    if (entry.isDirectory()) {
      if (!entry.name.startsWith(".") && !skippedDirs.has(entry.name)) {
        files.push(...sourceFiles(root, relative));
      }
    } else if (entry.isFile() && entry.name.endsWith(".ts")) {
      files.push(relative);
    }
  }
  return files;
}

const mesh = "services/mesh/";

/** A mesh module's layer: its folder, "top" for a top-level file, undefined for a file out of place. */
function layerOf(meshPath: string): string | undefined {
  const parts = meshPath.split("/");
  if (parts.length === 1) {
    return meshTopFiles.includes(meshPath) || meshPath.endsWith(".spec.ts") ? "top" : undefined;
  }
  return parts.length === 2 && meshLayers.includes(parts[0]!) ? parts[0] : undefined;
}

const rank = (layer: string) => (layer === "top" ? meshLayers.length : meshLayers.indexOf(layer));
const isSpec = (file: string) => file.endsWith(".spec.ts");
const layering = `${meshLayers.join(" < ")} < top-level files`;

/**
 * Checks the import rules (see the head of this file) over the TypeScript
 * files below `root`, and returns one message per broken rule: the file, the
 * import and the rule; none when all hold.
 */
export function checkImports(root: string): string[] {
  const problems: string[] = [];
  const graph = new Map<string, Import[]>();
  for (const file of sourceFiles(root)) {
    graph.set(file, importsOf(readFileSync(path.join(root, file), "utf8"), file));
  }

  for (const [file, imports] of graph) {
    const inMesh = file.startsWith(mesh);
    const meshPath = file.slice(mesh.length);
    const layer = inMesh ? layerOf(meshPath) : undefined;
    if (inMesh && layer === undefined) {
      problems.push(
        `${file}: out of place: a module of services/mesh sits in one of ${meshLayers.map((l) => `${l}/`).join(", ")}, or is one of the top-level ${meshTopFiles.join(", ")}`,
      );
    }
    for (const { specifier, target } of imports) {
      const where = `${file}: imports "${specifier}"`;
      if (target === undefined || !target.startsWith(mesh)) {
        const contract = inMesh && !isSpec(file) && target !== undefined ? contractOwners.find((c) => target.startsWith(c.contract)) : undefined;
        if (contract !== undefined && meshPath !== contract.owner) {
          problems.push(`${where}: in services/mesh only ${mesh}${contract.owner} imports ${contract.contract}, so that moving those calls to another contract changes one file`);
        }
        continue;
      }
      const targetPath = target.slice(mesh.length);
      if (!inMesh) {
        if (!meshEntries.includes(targetPath)) {
          problems.push(`${where}: code outside services/mesh imports it only through ${mesh}index.ts (or ${mesh}${mainEntry}, a main's entry)`);
        }
        continue;
      }
      const targetLayer = layerOf(targetPath);
      if (layer === undefined || layer === "top" || isSpec(file) || targetLayer === undefined) {
        continue;
      }
      if (rank(targetLayer) > rank(layer)) {
        const below = meshLayers.slice(0, rank(layer) + 1).map((l) => `${l}/`).join(", ");
        const above = targetLayer === "top" ? `the top-level ${targetPath}` : `${targetLayer}/`;
        problems.push(`${where}: ${layer}/ may import only ${below}, not ${above} (layers, lowest first: ${layering})`);
      }
    }
  }

  problems.push(...circlesIn(graph));
  problems.push(...pgLoadedBy(`${mesh}${mainEntry}`, graph));
  return problems;
}

/** The mesh modules `file` imports (specs left out). */
function meshImports(file: string, graph: Map<string, Import[]>, runtimeOnly = false): string[] {
  return (graph.get(file) ?? [])
    .filter((i) => i.target !== undefined && i.target.startsWith(mesh) && !isSpec(i.target) && graph.has(i.target) && !(runtimeOnly && i.typeOnly))
    .map((i) => i.target!);
}

/** One message per import circle among the mesh's modules, naming the files around it. */
function circlesIn(graph: Map<string, Import[]>): string[] {
  const problems: string[] = [];
  const state = new Map<string, "open" | "done">();
  const stack: string[] = [];
  const visit = (file: string) => {
    state.set(file, "open");
    stack.push(file);
    for (const next of meshImports(file, graph)) {
      if (state.get(next) === "open") {
        const circle = [...stack.slice(stack.indexOf(next)), next].map((f) => f.slice(mesh.length));
        problems.push(`${stack.at(-1)}: imports ${next.slice(mesh.length)}, which closes an import circle: ${circle.join(" → ")}`);
      } else if (state.get(next) === undefined) {
        visit(next);
      }
    }
    stack.pop();
    state.set(file, "done");
  };
  for (const file of [...graph.keys()].filter((f) => f.startsWith(mesh) && !isSpec(f)).sort()) {
    if (state.get(file) === undefined) {
      visit(file);
    }
  }
  return problems;
}

/** The modules `entry` loads (type-only imports load nothing) that import pg or MikroORM, with the path from the entry. */
function pgLoadedBy(entry: string, graph: Map<string, Import[]>): string[] {
  if (!graph.has(entry)) {
    return [];
  }
  const problems: string[] = [];
  const via = new Map<string, string[]>([[entry, [entry]]]);
  const queue = [entry];
  while (queue.length > 0) {
    const file = queue.shift()!;
    const chain = via.get(file)!;
    for (const { specifier, target, typeOnly } of graph.get(file)!) {
      if (target === undefined && !typeOnly && loadsPg.test(specifier)) {
        problems.push(
          `${file}: imports "${specifier}", loaded by ${chain.map((f) => f.slice(mesh.length)).join(" → ")}: a main imports ${mainEntry} before telemetry starts, and pg loaded then gets no SQL spans`,
        );
      }
    }
    for (const next of meshImports(file, graph, true)) {
      if (!via.has(next)) {
        via.set(next, [...chain, next]);
        queue.push(next);
      }
    }
  }
  return problems;
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
  const problems = checkImports(root);
  if (problems.length > 0) {
    process.stderr.write(`${problems.join("\n")}\n${problems.length} import rule(s) broken (see scripts/check-imports.ts)\n`);
    process.exit(1);
  }
}
