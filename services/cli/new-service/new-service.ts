import { Code, ConnectError } from "@connectrpc/connect";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import type { RegisteredService } from "../../registry.ts";
import { serviceNaming, type ServiceNaming } from "./service-naming.ts";
import { filledTemplate, registryEntryTemplate, serviceFilesOf, type TemplateValues } from "./service-templates.ts";

/** Options of {@link newService}. */
export interface NewServiceOptions {
  /** The checkout to add the service to: its repository root. */
  root: string;
  /** The service's name (see `checkServiceName`). */
  name: string;
  /** The name of its one entity, singular (see `checkEntityName`). */
  entity: string;
  /** Told each step as it starts, for progress. */
  onStep?: (step: string) => void;
}

/** What {@link newService} made. */
export interface NewService {
  naming: ServiceNaming;
  grpcPort: number;
  httpPort: number;
  /** The permissions its contract declares. */
  permissions: string[];
  /** The files it wrote, from the repository root; services/registry.ts, gen/ and deploy/ besides. */
  files: string[];
}

const registryFile = "services/registry.ts";
/** The line that opens the registry's list, and the one that closes it, before which a new entry goes. */
const registryOpening = "export const registry: readonly RegisteredService[] = [";
const registryClosing = "\n];\n";

/**
 * Adds a data-owning service to a checkout: its folder under services/ and
 * its contract under proto/ from the templates, its entry in
 * services/registry.ts on the next free pair of ports, then what follows
 * from them: gen/ (buf generate) and the Kubernetes manifests and the
 * image's EXPOSE line (deploy/manifests.ts). What can be checked before
 * writing is; if a later step fails (a permission another contract
 * declares already, say), what it wrote is taken back.
 * Refusals are ConnectErrors: INVALID_ARGUMENT, ALREADY_EXISTS, or
 * FAILED_PRECONDITION outside a checkout.
 */
export async function newService(options: NewServiceOptions): Promise<NewService> {
  const { root } = options;
  const step = options.onStep ?? (() => {});
  const at = (file: string) => path.join(root, file);
  for (const needed of [registryFile, "buf.gen.yaml", "proto/tenantry", "deploy/manifests.ts", "scripts/check-permissions.ts", "node_modules/.bin/buf"]) {
    if (!existsSync(at(needed))) {
      throw new ConnectError(
        `${root} is not a Tenantry checkout with its packages installed (${needed} is missing): run new-service in a clone of the repository after npm install`,
        Code.FailedPrecondition,
      );
    }
  }
  const naming = serviceNaming(options.name, options.entity);
  const { registry } = (await import(pathToFileURL(at(registryFile)).href)) as { registry: readonly RegisteredService[] };
  if (registry.some((s) => s.name === naming.name)) {
    throw new ConnectError(`service "${naming.name}" is registered already in ${registryFile}: pick another name`, Code.AlreadyExists);
  }
  if (naming.name === "kustomization") {
    throw new ConnectError(`a service named "kustomization" would overwrite deploy/k8s/services/kustomization.yaml: pick another name`, Code.InvalidArgument);
  }
  for (const taken of [`services/${naming.name}`, `proto/tenantry/${naming.package}`, `gen/tenantry/${naming.package}`]) {
    if (existsSync(at(taken))) {
      throw new ConnectError(`${taken} exists already: pick another name, or remove it if it is left from an earlier try`, Code.AlreadyExists);
    }
  }
  const permissions = [`${naming.package}.read`, `${naming.package}.write`];
  const values: TemplateValues = { ...naming, ...nextFreePorts(registry) };
  let files: Map<string, string>;
  try {
    files = serviceFilesOf(values);
  } catch (error) {
    throw new ConnectError(`${(error as Error).message}: pick another --entity`, Code.InvalidArgument);
  }
  const registryText = readFileSync(at(registryFile), "utf8");
  const closing = registryText.indexOf(registryClosing, registryText.indexOf(registryOpening));
  if (!registryText.includes(registryOpening) || closing < 0) {
    throw new ConnectError(`${registryFile} does not open its list with "${registryOpening}" and close it with "];" on a line of its own: add the entry by hand`, Code.FailedPrecondition);
  }

  const undo = () => {
    rmSync(at(`services/${naming.name}`), { recursive: true, force: true });
    rmSync(at(`proto/tenantry/${naming.package}`), { recursive: true, force: true });
    rmSync(at(`gen/tenantry/${naming.package}`), { recursive: true, force: true });
    writeFileSync(at(registryFile), registryText);
  };
  try {
    step(`writing services/${naming.name}/ and proto/tenantry/${naming.package}/`);
    for (const [file, text] of files) {
      mkdirSync(path.dirname(at(file)), { recursive: true });
      writeFileSync(at(file), text, { flag: "wx" });
    }
    step(`registering ${naming.name} in ${registryFile} (gRPC ${values.grpcPort}, HTTP ${values.httpPort})`);
    const entry = filledTemplate(registryEntryTemplate, values);
    writeFileSync(at(registryFile), `${registryText.slice(0, closing + 1)}${entry}${registryText.slice(closing + 1)}`);
    step("generating gen/ from proto/ (buf generate)");
    run(root, at("node_modules/.bin/buf"), ["generate"]);
    // As npm run check will: another service may declare a permission of the same name.
    step("checking the permissions it declares against the other contracts' (scripts/check-permissions.ts)");
    run(root, process.execPath, ["scripts/check-permissions.ts"]);
    step("making the Kubernetes manifests from the registry (deploy/manifests.ts)");
    run(root, process.execPath, ["deploy/manifests.ts"]);
  } catch (error) {
    undo();
    // gen/ and deploy/ made again from what is back as it was.
    spawnSync(at("node_modules/.bin/buf"), ["generate"], { cwd: root, stdio: "ignore" });
    spawnSync(process.execPath, ["deploy/manifests.ts"], { cwd: root, stdio: "ignore" });
    throw error;
  }
  return { naming, grpcPort: values.grpcPort, httpPort: values.httpPort, permissions, files: [...files.keys()] };
}

/** The ports after the highest gRPC and HTTP ports registered, stepping over any taken: a pair no service holds. */
export function nextFreePorts(registry: readonly Pick<RegisteredService, "grpcPort" | "httpPort">[]): { grpcPort: number; httpPort: number } {
  const taken = new Set(registry.flatMap((s) => [s.grpcPort, s.httpPort]));
  const after = (port: number) => {
    let next = port + 1;
    while (taken.has(next)) {
      next++;
    }
    taken.add(next);
    return next;
  };
  const grpcPort = after(Math.max(...registry.map((s) => s.grpcPort)));
  return { grpcPort, httpPort: after(Math.max(...registry.map((s) => s.httpPort))) };
}

/** Runs a program in the checkout; throws with its output when it fails. */
function run(root: string, program: string, args: string[]): void {
  const result = spawnSync(program, args, { cwd: root, encoding: "utf8" });
  if (result.status !== 0) {
    const output = `${result.stdout ?? ""}${result.stderr ?? ""}`.trim() || String(result.error ?? `exit status ${result.status}`);
    throw new Error(`${path.basename(program)} ${args.join(" ")} failed, and what new-service wrote is taken back:\n${output}`);
  }
}
