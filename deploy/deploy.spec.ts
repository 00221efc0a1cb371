// The container image and the Kubernetes manifests, checked against what the
// services actually read and listen on: their configuration shapes (the zod
// objects keyed by environment variable, `<name>Env` of each registered
// service's config.ts), their ports, health endpoints and data directory; and
// against services/registry.ts, from which `npm run deploy:manifests` makes
// every service's manifests. No cluster is needed; kustomize is emulated as
// far as deploy/k8s uses it (resources, files or folders with a kustomization
// of their own, a ConfigMap generator from env files, the namespace, labels
// and images).
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { isBuiltin } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { parse, parseAllDocuments } from "yaml";
import type { z } from "zod";
import { readConfig } from "../services/mesh/index.ts";
import { registry, type RegisteredService } from "../services/registry.ts";
import { exposingPorts, manifests } from "./manifests.ts";

const root = fileURLToPath(new URL("..", import.meta.url));
const k8sDir = path.join(root, "deploy/k8s");

/** A service's configuration: a zod schema per environment variable. */
type Shape = Record<string, z.ZodType>;

/** A registered service's configuration shape: what the config.ts beside its main exports as `<name>Env`. */
async function configShape(service: RegisteredService): Promise<Shape> {
  const file = path.join(path.dirname(service.main), "config.ts");
  const name = `${service.name.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase())}Env`;
  const shape = ((await import(path.join(root, file))) as Record<string, unknown>)[name];
  if (shape === undefined) {
    throw new Error(`${file} exports no ${name}: a service's config.ts exports its settings, by variable, as <name>Env`);
  }
  return shape as Shape;
}

/**
 * A registered service's own reading of its configuration, settings that
 * go together included: what the config.ts beside its main exports as
 * `read<Name>Config`, else its shape alone.
 */
async function configReader(service: RegisteredService, shape: Shape): Promise<(env: NodeJS.ProcessEnv) => unknown> {
  const file = path.join(path.dirname(service.main), "config.ts");
  const name = `read${service.name.replace(/(^|-)([a-z0-9])/g, (_, __: string, c: string) => c.toUpperCase())}Config`;
  const read = ((await import(path.join(root, file))) as Record<string, unknown>)[name];
  return typeof read === "function" ? (read as (env: NodeJS.ProcessEnv) => unknown) : (env) => readConfig(shape, env);
}

/** Each registered service's configuration shape, by the folder of its main.ts. */
const shapes: Record<string, Shape> = Object.fromEntries(await Promise.all(registry.map(async (s) => [s.name, await configShape(s)] as const)));
/** Each registered service's reading of its configuration, by name. */
const readers = Object.fromEntries(await Promise.all(registry.map(async (s) => [s.name, await configReader(s, shapes[s.name]!)] as const)));

/** Whether a service reads a variable: its shape, and the OpenTelemetry SDK's standard OTEL_* variables. */
function reads(shape: Shape, name: string): boolean {
  return Object.hasOwn(shape, name) || name === "TENANTRY_LOG_LEVEL" || name.startsWith("OTEL_");
}

/** Secrets that a service generates into its data directory when not given: per pod, so replicas would disagree. */
const generatedWhenMissing = ["TENANTRY_MESH_KEY", "TENANTRY_OPERATOR_TOKEN", "TENANTRY_MASTER_KEY"];

/** The Secret that operators create (never built by the kustomization), and the file that documents its keys. */
const operatorSecret = { name: "tenantry-secrets", example: path.join(root, "deploy/tenantry-secrets.env.example") };

/** Values of the right form for the Secret's keys, standing in for the operators' own in configuration checks. */
const secretSamples: Record<string, string> = {
  TENANTRY_DATABASE_URL: "postgres://tenantry:sample@postgres.example:5432/tenantry_platform",
  TENANTRY_MESH_KEY: "m".repeat(64),
  TENANTRY_OPERATOR_TOKEN: "o".repeat(64),
  TENANTRY_MASTER_KEY: Buffer.alloc(32, 7).toString("base64"),
  // Optional: empty unless backups go to S3 with a key of their own (deploy/k8s/config.env leaves the bucket to the operators).
  TENANTRY_BACKUP_S3_ACCESS_KEY_ID: "",
  TENANTRY_BACKUP_S3_SECRET_ACCESS_KEY: "",
};

interface KeyRef {
  name: string;
  key: string;
  optional?: boolean;
}

interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { configMapKeyRef?: KeyRef; secretKeyRef?: KeyRef };
}

interface Probe {
  httpGet?: { path?: string; port?: string | number; scheme?: string };
}

interface Container {
  name: string;
  image?: string;
  command?: string[];
  args?: string[];
  ports?: { name?: string; containerPort: number }[];
  env?: EnvVar[];
  envFrom?: { configMapRef?: { name: string; optional?: boolean }; secretRef?: { name: string; optional?: boolean } }[];
  resources?: { requests?: Record<string, string | number>; limits?: Record<string, string | number> };
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  startupProbe?: Probe;
  lifecycle?: { preStop?: { exec?: { command?: string[] }; sleep?: { seconds: number } } };
  securityContext?: Record<string, any>;
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
}

/** A Kubernetes object from one of the manifests, with the file it came from. */
interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  spec?: any;
  data?: Record<string, string>;
  file: string;
}

function readText(file: string): string {
  return readFileSync(file, "utf8");
}

/** `KEY=value` lines, as kustomize's generators and `kubectl create secret --from-env-file` read them. */
function parseEnvFile(text: string): Map<string, string> {
  const entries = new Map<string, string>();
  for (const line of text.split("\n").map((l) => l.trim())) {
    if (line === "" || line.startsWith("#")) {
      continue;
    }
    const at = line.indexOf("=");
    if (at <= 0) {
      throw new Error(`not KEY=value: "${line}"`);
    }
    entries.set(line.slice(0, at), line.slice(at + 1));
  }
  return entries;
}

interface Kustomization {
  namespace?: string;
  resources?: string[];
  labels?: { pairs: Record<string, string>; includeSelectors?: boolean; includeTemplates?: boolean }[];
  commonLabels?: Record<string, string>;
  configMapGenerator?: { name: string; envs?: string[]; literals?: string[] }[];
  secretGenerator?: { name: string; envs?: string[]; literals?: string[] }[];
  images?: { name: string; newName?: string; newTag?: string }[];
}

/** A kustomization and its folder, relative to deploy/k8s ("" for deploy/k8s itself). */
interface KustomizationAt {
  dir: string;
  kustomization: Kustomization;
}

/** The kustomization of a folder and, depth first, those of the folders it lists as resources. */
function kustomizationsFrom(dir: string): KustomizationAt[] {
  const kustomization = parse(readText(path.join(k8sDir, dir, "kustomization.yaml"))) as Kustomization;
  const nested = (kustomization.resources ?? [])
    .map((resource) => path.posix.join(dir, resource))
    .filter((resource) => existsSync(path.join(k8sDir, resource, "kustomization.yaml")));
  return [{ dir, kustomization }, ...nested.flatMap(kustomizationsFrom)];
}

const kustomizations = kustomizationsFrom("");
const kustomization = kustomizations[0]!.kustomization;

/** A path a kustomization names, relative to deploy/k8s. */
const underK8s = ({ dir }: KustomizationAt, file: string) => path.posix.join(dir, file);

const objects: K8sObject[] = kustomizations.flatMap((at) =>
  (at.kustomization.resources ?? [])
    .map((resource) => underK8s(at, resource))
    .filter((file) => existsSync(path.join(k8sDir, file)) && !existsSync(path.join(k8sDir, file, "kustomization.yaml")))
    .flatMap((file) =>
      parseAllDocuments(readText(path.join(k8sDir, file))).flatMap((document) => {
        if (document.errors.length > 0) {
          throw new Error(`${file}: ${document.errors.map((e) => e.message).join("; ")}`);
        }
        const value = document.toJS() as Omit<K8sObject, "file"> | null;
        return value === null ? [] : [{ ...value, file }];
      }),
    ),
);

const ofKind = (kind: string) => objects.filter((o) => o.kind === kind);
const deployments = ofKind("Deployment");
const k8sServices = ofKind("Service");
const budgets = ofKind("PodDisruptionBudget");
const autoscalers = ofKind("HorizontalPodAutoscaler");
const claims = new Map(ofKind("PersistentVolumeClaim").map((c) => [c.metadata.name, c]));

/** ConfigMaps by name: those in the manifests and those the kustomizations generate. */
const configMaps = new Map<string, Map<string, string>>([
  ...ofKind("ConfigMap").map((c) => [c.metadata.name, new Map(Object.entries(c.data ?? {}))] as const),
  ...kustomizations.flatMap((at) => (at.kustomization.configMapGenerator ?? []).map((generator) => {
    const data = new Map<string, string>();
    for (const file of generator.envs ?? []) {
      for (const [key, value] of parseEnvFile(readText(path.join(k8sDir, underK8s(at, file))))) {
        data.set(key, value);
      }
    }
    for (const [key, value] of parseEnvFile((generator.literals ?? []).join("\n"))) {
      data.set(key, value);
    }
    return [generator.name, data] as const;
  })),
]);

const secretExample = parseEnvFile(readText(operatorSecret.example));

function podSpec(deployment: K8sObject): any {
  return deployment.spec.template.spec;
}

function containerOf(deployment: K8sObject): Container {
  return podSpec(deployment).containers[0];
}

/** `services/<name>/main.ts` that a container runs, if it runs one. */
function mainOf(container: Container): { service: string; file: string } | undefined {
  for (const arg of [...(container.command ?? []), ...(container.args ?? [])]) {
    const m = /^services\/([a-z][a-z0-9-]*)\/main\.ts$/.exec(arg);
    if (m !== null) {
      return { service: m[1]!, file: arg };
    }
  }
  return undefined;
}

/** What a container gets in its environment from the manifests, and where each variable comes from. */
function givenEnvironment(container: Container): { given: Map<string, { value: string; from: "manifest" | "configMap" | "secret" }>; problems: string[] } {
  const given = new Map<string, { value: string; from: "manifest" | "configMap" | "secret" }>();
  const problems: string[] = [];
  const secretValue = (key: string) => secretSamples[key] ?? "";
  for (const source of container.envFrom ?? []) {
    if (source.configMapRef !== undefined) {
      const data = configMaps.get(source.configMapRef.name);
      if (data === undefined) {
        problems.push(`envFrom: no ConfigMap ${source.configMapRef.name}`);
      }
      for (const [key, value] of data ?? []) {
        given.set(key, { value, from: "configMap" });
      }
    } else if (source.secretRef !== undefined) {
      if (source.secretRef.name !== operatorSecret.name) {
        problems.push(`envFrom: no Secret ${source.secretRef.name}`);
      }
      for (const key of secretExample.keys()) {
        given.set(key, { value: secretValue(key), from: "secret" });
      }
    }
  }
  for (const variable of container.env ?? []) {
    const { configMapKeyRef, secretKeyRef } = variable.valueFrom ?? {};
    if (variable.value !== undefined) {
      given.set(variable.name, { value: String(variable.value), from: "manifest" });
    } else if (configMapKeyRef !== undefined) {
      const value = configMaps.get(configMapKeyRef.name)?.get(configMapKeyRef.key);
      if (value === undefined) {
        problems.push(`${variable.name}: ConfigMap ${configMapKeyRef.name} has no key ${configMapKeyRef.key}`);
      } else {
        given.set(variable.name, { value, from: "configMap" });
      }
    } else if (secretKeyRef !== undefined) {
      if (secretKeyRef.name !== operatorSecret.name || !secretExample.has(secretKeyRef.key)) {
        problems.push(`${variable.name}: Secret ${secretKeyRef.name} has no documented key ${secretKeyRef.key}`);
      } else {
        given.set(variable.name, { value: secretValue(secretKeyRef.key), from: "secret" });
      }
    } else {
      problems.push(`${variable.name}: neither a value nor a ConfigMap or Secret key`);
    }
  }
  return { given, problems };
}

/** One instruction of the Dockerfile, continuation lines joined. */
interface Instruction {
  keyword: string;
  args: string;
}

const dockerfile = readText(path.join(root, "deploy/Dockerfile"));
const instructions: Instruction[] = dockerfile
  .replace(/\\\n/g, " ")
  .split("\n")
  .map((line) => line.trim())
  .filter((line) => line !== "" && !line.startsWith("#"))
  .map((line) => {
    const [keyword, ...rest] = line.split(/\s+/);
    return { keyword: keyword!.toUpperCase(), args: rest.join(" ") };
  });

/** The build stages, with the global ARGs' defaults substituted into FROM. */
const stages = (() => {
  const globals = new Map<string, string>();
  const result: { image: string; name?: string; instructions: Instruction[] }[] = [];
  for (const instruction of instructions) {
    if (instruction.keyword === "FROM") {
      const [image, as, name] = instruction.args.replace(/\$\{?(\w+)\}?/g, (_, arg: string) => globals.get(arg) ?? "").split(/\s+/);
      result.push({ image: image!, ...(as?.toUpperCase() === "AS" ? { name: name! } : {}), instructions: [] });
    } else if (result.length === 0 && instruction.keyword === "ARG") {
      const [name, value = ""] = instruction.args.split("=");
      globals.set(name!, value);
    } else {
      result.at(-1)?.instructions.push(instruction);
    }
  }
  return result;
})();
const finalStage = stages.at(-1)!;

function argsOf(stage: (typeof stages)[number], keyword: string): string[] {
  return stage.instructions.filter((i) => i.keyword === keyword).map((i) => i.args);
}

const imageEnv: Record<string, string> = Object.fromEntries(
  argsOf(finalStage, "ENV").flatMap((args) => [...args.matchAll(/(\w+)=("[^"]*"|\S+)/g)].map((m) => [m[1]!, m[2]!.replace(/^"|"$/g, "")])),
);
const workdir = argsOf(finalStage, "WORKDIR").at(-1) ?? "/";

/** A COPY's sources, destination and --from stage. */
function copies(stage: (typeof stages)[number]): { from?: string; sources: string[]; destination: string }[] {
  return argsOf(stage, "COPY").map((args) => {
    const words = args.split(/\s+/);
    const from = words.find((w) => w.startsWith("--from="))?.slice("--from=".length);
    const paths = words.filter((w) => !w.startsWith("--"));
    return { ...(from === undefined ? {} : { from }), sources: paths.slice(0, -1), destination: paths.at(-1)! };
  });
}

/** What the stage that the final image takes services/ from removes: `find -name` patterns and `rm -r` paths. */
const removed = (() => {
  const servicesCopy = copies(finalStage).find((c) => c.sources.some((s) => s.endsWith("/services")));
  const stage = stages.find((s) => s.name !== undefined && s.name === servicesCopy?.from);
  const runs = stage === undefined ? [] : argsOf(stage, "RUN");
  return {
    patterns: runs.flatMap((run) => [...run.matchAll(/-name\s+'([^']+)'\s+-delete/g)].map((m) => m[1]!)),
    paths: runs.flatMap((run) => [...run.matchAll(/\brm\s+-r\s+([^&;]+)/g)].flatMap((m) => m[1]!.trim().split(/\s+/))),
  };
})();

function filesUnder(dir: string): string[] {
  return readdirSync(path.join(root, dir), { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => path.relative(root, path.join(entry.parentPath, entry.name)).split(path.sep).join("/"));
}

/**
 * A glob as Docker's ignore files and `find -name` read it: `*` and `?`
 * within a path segment (leading dots included), `**` across segments.
 */
function glob(pattern: string): RegExp {
  const source = pattern
    .split(/(\*\*\/?|\*|\?)/)
    .map((part) => (part === "**/" ? "(?:.*/)?" : part === "**" ? ".*" : part === "*" ? "[^/]*" : part === "?" ? "[^/]" : part.replace(/[.+^${}()|[\]\\]/g, "\\$&")))
    .join("");
  return new RegExp(`^${source}$`);
}

/** Whether the image holds a file of the repository. */
function shipped(file: string): boolean {
  return (
    (file.startsWith("gen/") || file.startsWith("services/")) &&
    !removed.patterns.some((pattern) => glob(pattern).test(path.posix.basename(file))) &&
    !removed.paths.some((p) => file === p || file.startsWith(`${p}/`))
  );
}

const shippedFiles = [...filesUnder("gen"), ...filesUnder("services")].filter(shipped);
const packageJson = JSON.parse(readText(path.join(root, "package.json"))) as {
  dependencies?: Record<string, string>;
  bin?: Record<string, string>;
};

/** What a file imports at run time (type-only imports are erased). */
function runtimeImports(text: string): string[] {
  const statements = [...text.matchAll(/^\s*(?:import|export)\s+(type\s+)?(?:[^'";]*?\s+from\s+)?["']([^"']+)["']/gm)]
    .filter((m) => m[1] === undefined)
    .map((m) => m[2]!);
  const dynamic = [...text.matchAll(/\bimport\(\s*["']([^"']+)["']\s*\)/g)].map((m) => m[1]!);
  return [...statements, ...dynamic];
}

/** Kubernetes resource quantity ("250m", "512Mi", "1") as a number. */
function quantity(value: string | number | undefined): number {
  const m = /^(\d+(?:\.\d+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$/.exec(String(value));
  if (m === null) {
    throw new Error(`not a quantity: ${value}`);
  }
  const units: Record<string, number> = { m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40 };
  return Number(m[1]) * (units[m[2] ?? ""] ?? 1);
}

function selects(selector: Record<string, string> | undefined, labels: Record<string, string> | undefined): boolean {
  return selector !== undefined && Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

function deploymentsSelectedBy(selector: Record<string, string> | undefined): K8sObject[] {
  return deployments.filter((d) => selects(selector, d.spec.template.metadata?.labels));
}

function autoscalerOf(deployment: K8sObject): K8sObject | undefined {
  return autoscalers.find((h) => h.spec.scaleTargetRef?.kind === "Deployment" && h.spec.scaleTargetRef?.name === deployment.metadata.name);
}

/**
 * The Service and Deployment a `host:port` address reaches from inside the
 * namespace, or why it reaches none: the host must be a Service's name
 * (optionally qualified with the namespace) and the port its gRPC port.
 */
function reach(address: string): { service: string } | { problem: string } {
  const [host = "", port = ""] = address.split(":");
  const [name, namespace] = host.split(".");
  const k8sService = k8sServices.find((s) => s.metadata.name === name);
  if (k8sService === undefined || (namespace !== undefined && namespace !== kustomization.namespace)) {
    return { problem: `${address}: no Service ${host} in namespace ${kustomization.namespace}` };
  }
  const grpc = (k8sService.spec.ports as { name: string; port: number }[]).find((p) => p.name === "grpc");
  if (grpc?.port !== Number(port)) {
    return { problem: `${address}: Service ${name}'s grpc port is ${grpc?.port}` };
  }
  const [deployment] = deploymentsSelectedBy(k8sService.spec.selector);
  const main = deployment === undefined ? undefined : mainOf(containerOf(deployment));
  return main === undefined ? { problem: `${address}: Service ${name} selects no service's pods` } : { service: main.service };
}

/** How long a container's preStop hook holds its shutdown back, in milliseconds. */
function preStopMs(container: Container): number {
  const preStop = container.lifecycle?.preStop;
  const [command, seconds] = preStop?.exec?.command ?? [];
  if (command === "sleep") {
    return Number(seconds) * 1000;
  }
  return (preStop?.sleep?.seconds ?? 0) * 1000;
}

describe("kustomization (deploy/k8s)", () => {
  it("lists every file under deploy/k8s, its own or a nested kustomization's, and every file listed exists", () => {
    const listed = kustomizations.flatMap((at) =>
      [
        ...(at.kustomization.resources ?? []),
        ...[...(at.kustomization.configMapGenerator ?? []), ...(at.kustomization.secretGenerator ?? [])].flatMap((g) => g.envs ?? []),
      ].map((file) => underK8s(at, file)),
    );
    const present = readdirSync(k8sDir, { recursive: true, withFileTypes: true })
      .map((entry) => ({ entry, file: path.relative(k8sDir, path.join(entry.parentPath, entry.name)).split(path.sep).join("/") }))
      .filter(({ entry, file }) => entry.isFile() && !kustomizations.some((at) => file === underK8s(at, "kustomization.yaml")))
      .map(({ file }) => file);
    expect(present.filter((file) => !listed.includes(file))).toEqual([]);
    expect(listed.filter((file) => !existsSync(path.join(k8sDir, file)))).toEqual([]);
  });

  it("parses into Kubernetes objects, each with an apiVersion, a kind and a name unique for its kind", () => {
    expect(objects.length).toBeGreaterThan(0);
    for (const o of objects) {
      expect(o.apiVersion, o.file).toMatch(/^[a-z0-9./]+$/);
      expect(o.kind, o.file).toMatch(/^[A-Z]\w+$/);
      expect(o.metadata?.name, o.file).toMatch(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
    }
    const names = objects.map((o) => `${o.kind}/${o.metadata.name}`);
    expect(names.filter((n, i) => names.indexOf(n) !== i)).toEqual([]);
  });

  it("puts everything in namespace tenantry, and no object names another", () => {
    expect(kustomization.namespace).toBe("tenantry");
    expect(objects.filter((o) => o.metadata.namespace !== undefined && o.metadata.namespace !== "tenantry").map((o) => o.metadata.name)).toEqual([]);
  });

  it("labels every object and pod as part of tenantry, leaving the immutable selectors alone", () => {
    expect(kustomization.commonLabels).toBeUndefined();
    const label = kustomization.labels?.find((l) => l.pairs["app.kubernetes.io/part-of"] === "tenantry");
    expect(label?.includeTemplates).toBe(true);
    expect(label?.includeSelectors ?? false).toBe(false);
  });

  it("sets the one Tenantry image of every Deployment in its images", () => {
    const images = new Set(deployments.flatMap((d) => podSpec(d).containers.map((c: Container) => c.image)));
    expect([...images]).toEqual(["tenantry"]);
    expect(kustomization.images?.find((i) => i.name === "tenantry")?.newTag).toBeTruthy();
  });
});

describe("services/registry.ts", () => {
  it("is what deploy/k8s/services and the image's EXPOSE line are made of (npm run deploy:manifests)", () => {
    const made = [...manifests()];
    expect(made.filter(([file, text]) => !existsSync(path.join(root, file)) || readText(path.join(root, file)) !== text).map(([file]) => file)).toEqual([]);
    expect(exposingPorts(dockerfile)).toBe(dockerfile);
  });

  for (const service of registry) {
    it(`has ${service.name} run from its main by one Deployment, behind a Service and a PodDisruptionBudget, scaled as registered`, () => {
      const [deployment, ...others] = deployments.filter((d) => mainOf(containerOf(d))?.service === service.name);
      expect(others).toEqual([]);
      expect(deployment, `no Deployment runs ${service.main}`).toBeDefined();
      expect(k8sServices.filter((s) => deploymentsSelectedBy(s.spec.selector).includes(deployment!)).map((s) => s.metadata.name)).toEqual([service.name]);
      expect(budgets.filter((b) => deploymentsSelectedBy(b.spec.selector?.matchLabels).includes(deployment!))).toHaveLength(1);
      const replicas = service.kubernetes.replicas;
      const autoscaler = autoscalerOf(deployment!);
      if ("min" in replicas) {
        expect(autoscaler?.spec).toMatchObject({ minReplicas: replicas.min, maxReplicas: replicas.max });
      } else {
        expect(autoscaler).toBeUndefined();
        expect(deployment!.spec.replicas).toBe(replicas.count);
      }
    });
  }
});

describe("Secret tenantry-secrets", () => {
  const refs = deployments.flatMap((d) =>
    (containerOf(d).env ?? []).flatMap((v) => (v.valueFrom?.secretKeyRef === undefined ? [] : [v.valueFrom.secretKeyRef])),
  );

  it("is documented key by key in deploy/tenantry-secrets.env.example, with no value filled in", () => {
    expect(secretExample.size).toBeGreaterThan(0);
    expect([...secretExample].filter(([, value]) => value !== "").map(([key]) => key)).toEqual([]);
  });

  it("holds exactly the keys the Deployments take from it", () => {
    expect(refs.filter((r) => r.name !== operatorSecret.name).map((r) => r.name)).toEqual([]);
    expect(new Set(refs.map((r) => r.key))).toEqual(new Set(secretExample.keys()));
  });

  it("is created by operators, never by the kustomization, so that an apply cannot replace real secrets", () => {
    expect(ofKind("Secret").map((s) => s.metadata.name)).not.toContain(operatorSecret.name);
    expect((kustomization.secretGenerator ?? []).map((g) => g.name)).not.toContain(operatorSecret.name);
  });

  it("has a stand-in of the right form for each key, for the configuration checks", () => {
    expect([...secretExample.keys()].filter((key) => secretSamples[key] === undefined)).toEqual([]);
  });
});

describe("ConfigMaps", () => {
  it("hold only settings that some Deployment takes and its service reads, and no secret", () => {
    const taken = new Set(
      deployments.flatMap((d) => {
        const container = containerOf(d);
        const shape = shapes[mainOf(container)?.service ?? ""] ?? {};
        return (container.env ?? [])
          .filter((v) => reads(shape, v.name))
          .flatMap((v) => (v.valueFrom?.configMapKeyRef === undefined ? [] : [`${v.valueFrom.configMapKeyRef.name}/${v.valueFrom.configMapKeyRef.key}`]));
      }),
    );
    expect(configMaps.size).toBeGreaterThan(0);
    for (const [name, data] of configMaps) {
      expect([...data.keys()].filter((key) => !taken.has(`${name}/${key}`)), name).toEqual([]);
      expect([...data.keys()].filter((key) => secretExample.has(key)), name).toEqual([]);
    }
  });
});

for (const deployment of deployments) {
  const name = deployment.metadata.name;
  const pod = podSpec(deployment);
  const container = containerOf(deployment);
  const main = mainOf(container);
  const shape = shapes[main?.service ?? ""] ?? {};
  const { given, problems } = givenEnvironment(container);
  const env: Record<string, string> = { ...imageEnv, ...Object.fromEntries([...given].map(([key, v]) => [key, v.value])) };
  /** A setting as the service would read it: its shape, with "" as unset like readConfig. */
  const setting = (key: string): any => {
    const schema = shape[key];
    if (schema === undefined) {
      throw new Error(`${main?.service} does not read ${key}`);
    }
    return schema.parse(env[key] === "" ? undefined : env[key]);
  };
  const mounts = container.volumeMounts ?? [];

  describe(`Deployment ${name}`, () => {
    it("runs one container: node on a service's main.ts that exists and is in the image", () => {
      expect(pod.containers).toHaveLength(1);
      expect(container.command?.[0]).toBe("node");
      expect(main, "no services/<name>/main.ts in the command").toBeDefined();
      expect(registry.find((s) => s.name === main!.service)?.main, "a service of services/registry.ts").toBe(main!.file);
      expect(existsSync(path.join(root, main!.file))).toBe(true);
      expect(shipped(main!.file)).toBe(true);
    });

    it("names its container ports grpc and http, at the ports its service listens on", () => {
      const ports = new Map((container.ports ?? []).map((p) => [p.name, p.containerPort]));
      expect([...ports.keys()].sort()).toEqual(["grpc", "http"]);
      expect(ports.get("grpc")).toBe(setting("TENANTRY_GRPC_PORT"));
      expect(ports.get("http")).toBe(setting("TENANTRY_HTTP_PORT"));
    });

    it("asks GET /readyz on port http for readiness and GET /healthz for liveness and start-up", () => {
      expect(container.readinessProbe?.httpGet).toEqual({ path: "/readyz", port: "http" });
      expect(container.livenessProbe?.httpGet).toEqual({ path: "/healthz", port: "http" });
      if (container.startupProbe !== undefined) {
        expect(container.startupProbe.httpGet).toEqual({ path: "/healthz", port: "http" });
      }
    });

    it("takes each variable from a value, or a ConfigMap or Secret key that exists", () => {
      expect(problems).toEqual([]);
    });

    it("gives its service only variables that it reads", () => {
      expect([...given.keys()].filter((key) => !reads(shape, key))).toEqual([]);
      // Otherwise Kubernetes adds <SERVICE>_PORT and the like for every Service in the namespace.
      expect(pod.enableServiceLinks).toBe(false);
    });

    it("gives its service every variable that has no default", () => {
      const required = Object.keys(shape).filter((key) => !shape[key]!.safeParse(undefined).success);
      expect(required.filter((key) => !given.has(key))).toEqual([]);
    });

    it("gives its service from the Secret every secret that it would otherwise generate per pod", () => {
      const wanted = generatedWhenMissing.filter((key) => Object.hasOwn(shape, key));
      expect(wanted.filter((key) => given.get(key)?.from !== "secret")).toEqual([]);
    });

    it("takes secrets only from the Secret, never from the manifest or a ConfigMap", () => {
      expect([...given].filter(([key, v]) => secretExample.has(key) && v.from !== "secret").map(([key]) => key)).toEqual([]);
    });

    it("passes its service's own configuration check", () => {
      expect(() => readConfig(shape, env)).not.toThrow();
      expect(() => readers[main?.service ?? ""]?.(env)).not.toThrow();
    });

    it("listens on every interface of the pod, where probes and Services reach it", () => {
      expect(["0.0.0.0", "::"]).toContain(setting("TENANTRY_BIND_HOST"));
    });

    it("mounts nothing writable at its data directory, so that a missing secret stops it instead of being generated", () => {
      const dataDir = path.posix.resolve(workdir, setting("TENANTRY_DATA_DIR"));
      expect(mounts.filter((m) => !m.readOnly && (dataDir === m.mountPath || dataDir.startsWith(`${m.mountPath.replace(/\/$/, "")}/`)))).toEqual([]);
    });

    it("runs as a user that is not root, without privileges, on a read-only root filesystem", () => {
      const podContext = pod.securityContext ?? {};
      const context = container.securityContext ?? {};
      expect(context.runAsNonRoot ?? podContext.runAsNonRoot).toBe(true);
      expect(context.runAsUser ?? podContext.runAsUser).toBeGreaterThan(0);
      expect(context.allowPrivilegeEscalation).toBe(false);
      expect(context.readOnlyRootFilesystem).toBe(true);
      expect(context.capabilities?.drop).toContain("ALL");
      expect((context.seccompProfile ?? podContext.seccompProfile)?.type).toBe("RuntimeDefault");
      expect(pod.automountServiceAccountToken).toBe(false);
    });

    it("lets Kubernetes wait out the preStop hook and the service's shutdown grace before killing it", () => {
      const terminationMs = (pod.terminationGracePeriodSeconds ?? 30) * 1000;
      expect(terminationMs).toBeGreaterThan(preStopMs(container) + setting("TENANTRY_SHUTDOWN_GRACE_MS"));
    });

    it("requests and limits CPU and memory, each request within its limit", () => {
      const { requests = {}, limits = {} } = container.resources ?? {};
      for (const resource of ["cpu", "memory"]) {
        expect(quantity(requests[resource]), `${resource} request`).toBeGreaterThan(0);
        expect(quantity(requests[resource]), `${resource} request`).toBeLessThanOrEqual(quantity(limits[resource]));
      }
    });

    it("has Prometheus scrape GET /metrics on its http port", () => {
      const annotations = deployment.spec.template.metadata?.annotations ?? {};
      expect(annotations["prometheus.io/scrape"]).toBe("true");
      expect(annotations["prometheus.io/path"] ?? "/metrics").toBe("/metrics");
      expect(Number(annotations["prometheus.io/port"])).toBe(setting("TENANTRY_HTTP_PORT"));
    });

    it("mounts only volumes it defines, and claims that exist", () => {
      const volumes = new Map<string, any>((pod.volumes ?? []).map((v: { name: string }) => [v.name, v]));
      expect(mounts.filter((m) => !volumes.has(m.name)).map((m) => m.name)).toEqual([]);
      const claimNames = [...volumes.values()].flatMap((v) => (v.persistentVolumeClaim === undefined ? [] : [v.persistentVolumeClaim.claimName as string]));
      expect(claimNames.filter((claim) => !claims.has(claim))).toEqual([]);
    });

    it("runs one pod, replaced rather than rolled, when it mounts a ReadWriteOnce claim", () => {
      const exclusive = (pod.volumes ?? []).some((v: any) => claims.get(v.persistentVolumeClaim?.claimName)?.spec.accessModes?.includes("ReadWriteOnce"));
      if (exclusive) {
        expect(deployment.spec.replicas).toBe(1);
        expect(deployment.spec.strategy?.type).toBe("Recreate");
        expect(autoscalerOf(deployment)).toBeUndefined();
      }
    });

    it("leaves its replica count to its autoscaler, if it has one, so that an apply does not reset it", () => {
      if (autoscalerOf(deployment) !== undefined) {
        expect(deployment.spec.replicas).toBeUndefined();
      }
    });

    if (main?.service === "platform") {
      it("keeps Platform's backups (<data dir>/backups), offboarded tenants' final ones among them, on a PersistentVolumeClaim", () => {
        const backupsDir = path.posix.join(path.posix.resolve(workdir, setting("TENANTRY_DATA_DIR")), "backups");
        const mount = mounts.find((m) => m.mountPath === backupsDir);
        expect(mount, `no volume at ${backupsDir}`).toBeDefined();
        const volume = (pod.volumes ?? []).find((v: { name: string }) => v.name === mount!.name);
        expect(claims.has(volume?.persistentVolumeClaim?.claimName)).toBe(true);
      });
    }
  });
}

for (const k8sService of k8sServices) {
  describe(`Service ${k8sService.metadata.name}`, () => {
    it("selects the pods of exactly one Deployment", () => {
      expect(deploymentsSelectedBy(k8sService.spec.selector)).toHaveLength(1);
    });

    it("names its ports grpc and http, each targeting the container port of that name", () => {
      const ports = k8sService.spec.ports as { name: string; port: number; targetPort?: string | number }[];
      expect(ports.map((p) => p.name).sort()).toEqual(["grpc", "http"]);
      const [deployment] = deploymentsSelectedBy(k8sService.spec.selector);
      const containerPorts = new Set((deployment === undefined ? [] : containerOf(deployment).ports ?? []).map((p) => p.name));
      for (const port of ports) {
        expect(port.targetPort).toBe(port.name);
        expect(containerPorts.has(port.name)).toBe(true);
      }
    });
  });
}

describe("Services", () => {
  it("put every Deployment behind one", () => {
    const served = new Set(k8sServices.flatMap((s) => deploymentsSelectedBy(s.spec.selector)));
    expect(deployments.filter((d) => !served.has(d)).map((d) => d.metadata.name)).toEqual([]);
  });
});

describe("mesh addresses", () => {
  const settingsOf = (deployment: K8sObject) => {
    const container = containerOf(deployment);
    const shape = shapes[mainOf(container)?.service ?? ""] ?? {};
    const env = { ...imageEnv, ...Object.fromEntries([...givenEnvironment(container).given].map(([k, v]) => [k, v.value])) };
    return { shape, config: readConfig(shape, env) as Record<string, unknown> };
  };

  it("lead Auth and Backend to the gRPC ports of Platform's and Auth's Services", () => {
    const problems: string[] = [];
    let checked = 0;
    for (const deployment of deployments) {
      const { shape, config } = settingsOf(deployment);
      for (const [key, service] of [["TENANTRY_PLATFORM_ADDRESS", "platform"], ["TENANTRY_AUTH_ADDRESS", "auth"]] as const) {
        if (Object.hasOwn(shape, key)) {
          checked++;
          const reached = reach(String(config[key]));
          if ("problem" in reached || reached.service !== service) {
            problems.push(`${deployment.metadata.name} ${key}: ${"problem" in reached ? reached.problem : `reaches ${reached.service}`}`);
          }
        }
      }
    }
    expect(checked).toBeGreaterThan(0);
    expect(problems).toEqual([]);
  });

  it("lead Platform to the gRPC port of every other service, each by its own name", () => {
    const platform = deployments.find((d) => mainOf(containerOf(d))?.service === "platform");
    expect(platform).toBeDefined();
    const schemaServices = settingsOf(platform!).config.TENANTRY_SCHEMA_SERVICES as Map<string, string>;
    const problems = [...schemaServices].flatMap(([service, address]) => {
      const reached = reach(address);
      return "problem" in reached ? [reached.problem] : reached.service === service ? [] : [`${service}=${address} reaches ${reached.service}`];
    });
    expect(problems).toEqual([]);
    const others = deployments.map((d) => mainOf(containerOf(d))?.service).filter((s) => s !== undefined && s !== "platform");
    expect([...schemaServices.keys()].sort()).toEqual(others.sort());
  });
});

for (const budget of budgets) {
  describe(`PodDisruptionBudget ${budget.metadata.name}`, () => {
    const selected = deploymentsSelectedBy(budget.spec.selector?.matchLabels);

    it("covers the pods of exactly one Deployment", () => {
      expect(selected).toHaveLength(1);
    });

    it("lets a node drain evict at least one of its pods", () => {
      const deployment = selected[0]!;
      const fewest = autoscalerOf(deployment)?.spec.minReplicas ?? deployment.spec.replicas ?? 1;
      const share = (value: number | string) => (typeof value === "string" ? Math.ceil((Number.parseFloat(value) / 100) * fewest) : value);
      if (budget.spec.maxUnavailable !== undefined) {
        expect(share(budget.spec.maxUnavailable)).toBeGreaterThanOrEqual(1);
      } else {
        expect(share(budget.spec.minAvailable)).toBeLessThan(fewest);
      }
    });
  });
}

describe("PodDisruptionBudgets", () => {
  it("cover every Deployment", () => {
    const covered = new Set(budgets.flatMap((b) => deploymentsSelectedBy(b.spec.selector?.matchLabels)));
    expect(deployments.filter((d) => !covered.has(d)).map((d) => d.metadata.name)).toEqual([]);
  });
});

for (const autoscaler of autoscalers) {
  describe(`HorizontalPodAutoscaler ${autoscaler.metadata.name}`, () => {
    const target = deployments.find((d) => d.metadata.name === autoscaler.spec.scaleTargetRef?.name);

    it("scales an existing Deployment (autoscaling/v2)", () => {
      expect(autoscaler.apiVersion).toBe("autoscaling/v2");
      expect(autoscaler.spec.scaleTargetRef).toMatchObject({ apiVersion: "apps/v1", kind: "Deployment" });
      expect(target).toBeDefined();
    });

    it("scales on the CPU utilisation of pods that request CPU", () => {
      const cpu = (autoscaler.spec.metrics ?? []).find((m: any) => m.type === "Resource" && m.resource?.name === "cpu");
      expect(cpu?.resource.target).toMatchObject({ type: "Utilization" });
      expect(cpu.resource.target.averageUtilization).toBeGreaterThan(0);
      expect(quantity(containerOf(target!).resources?.requests?.cpu)).toBeGreaterThan(0);
    });

    it("keeps at least two pods, so that one can always be evicted or fail", () => {
      expect(autoscaler.spec.minReplicas).toBeGreaterThanOrEqual(2);
      expect(autoscaler.spec.maxReplicas).toBeGreaterThanOrEqual(autoscaler.spec.minReplicas);
    });
  });
}

describe("HorizontalPodAutoscalers", () => {
  it("scale the services the registry scales on CPU", () => {
    const scaled = deployments.filter((d) => autoscalerOf(d) !== undefined).map((d) => mainOf(containerOf(d))?.service);
    expect(scaled.sort()).toEqual(registry.filter((s) => "min" in s.kubernetes.replicas).map((s) => s.name).sort());
  });
});

describe("image (deploy/Dockerfile)", () => {
  it("builds every stage on the official Node 24 image", () => {
    expect(stages.length).toBeGreaterThan(1);
    for (const stage of stages) {
      expect(stage.image).toMatch(/^(docker\.io\/(library\/)?)?node:24(\.\d+){0,2}(-[a-z]+)*(@sha256:[0-9a-f]{64})?$/);
    }
  });

  it("installs production dependencies only, exactly as locked", () => {
    expect(stages.flatMap((s) => argsOf(s, "RUN")).some((run) => /\bnpm ci\b[^&;]*--omit=dev/.test(run))).toBe(true);
  });

  it("runs as a user that is not root", () => {
    const user = argsOf(finalStage, "USER").at(-1);
    expect(user).toBeDefined();
    expect(user!.split(":")[0]).not.toMatch(/^(root|0)$/);
  });

  it("runs in production mode, listening on every interface", () => {
    expect(imageEnv.NODE_ENV).toBe("production");
    expect(imageEnv.TENANTRY_ENV).toBe("production");
    expect(imageEnv.TENANTRY_BIND_HOST).toBe("0.0.0.0");
  });

  it("copies into the final image only package.json, the installed node_modules, gen and services", () => {
    const destinations = copies(finalStage).map((c) => path.posix.resolve(workdir, c.destination));
    expect(destinations.sort()).toEqual(["", "gen", "node_modules", "services"].map((d) => path.posix.join(workdir, d)).sort());
    expect(copies(finalStage).filter((c) => c.from === undefined).flatMap((c) => c.sources)).toEqual(["package.json"]);
  });

  it("leaves out the tests and their helpers, and every path it removes exists", () => {
    expect(removed.patterns).toContain("*.spec.ts");
    expect(removed.paths).toContain("services/testing");
    expect(removed.paths.filter((p) => !existsSync(path.join(root, p)))).toEqual([]);
    expect(shippedFiles.filter((file) => file.endsWith(".spec.ts") || file.startsWith("services/testing/"))).toEqual([]);
  });

  it("ships only code whose imports are production dependencies or files it ships", () => {
    const dependencies = new Set(Object.keys(packageJson.dependencies ?? {}));
    const problems = shippedFiles
      .filter((file) => /\.(ts|js|mjs)$/.test(file) && !file.endsWith(".d.ts"))
      .flatMap((file) =>
        runtimeImports(readText(path.join(root, file))).flatMap((specifier) => {
          if (specifier.startsWith(".")) {
            const target = path.posix.join(path.posix.dirname(file), specifier);
            return shippedFiles.includes(target) ? [] : [`${file}: ${specifier} is not in the image`];
          }
          if (isBuiltin(specifier)) {
            return [];
          }
          const name = specifier.split("/").slice(0, specifier.startsWith("@") ? 2 : 1).join("/");
          return dependencies.has(name) ? [] : [`${file}: ${name} is not a production dependency`];
        }),
      );
    expect(problems).toEqual([]);
  });

  it("puts every command of package.json's bin on the PATH", () => {
    const links = argsOf(finalStage, "RUN").flatMap((run) => [...run.matchAll(/\bln -s (\S+) \/usr\/local\/bin\/(\S+)/g)].map((m) => [m[2]!, m[1]!] as const));
    for (const [command, file] of Object.entries(packageJson.bin ?? {})) {
      expect(new Map(links).get(command), command).toBe(path.posix.resolve(workdir, file));
      expect(shipped(path.posix.normalize(file)), file).toBe(true);
    }
  });

  it("exposes every port the Deployments listen on", () => {
    const exposed = new Set(argsOf(finalStage, "EXPOSE").flatMap((args) => args.split(/\s+/).map(Number)));
    const ports = deployments.flatMap((d) => (containerOf(d).ports ?? []).map((p) => p.containerPort));
    expect(ports.filter((p) => !exposed.has(p))).toEqual([]);
  });

  it("keeps local keys and data, node_modules and .git out of the build context", () => {
    const rules = readText(path.join(root, "deploy/Dockerfile.dockerignore"))
      .split("\n")
      .map((line) => line.trim())
      .filter((line) => line !== "" && !line.startsWith("#"));
    const excluded = (file: string) => {
      const parts = file.split("/");
      let result = false;
      for (const rule of rules) {
        const negated = rule.startsWith("!");
        const pattern = negated ? rule.slice(1) : rule;
        if (parts.some((_, i) => glob(pattern).test(parts.slice(0, i + 1).join("/")))) {
          result = !negated;
        }
      }
      return result;
    };
    for (const file of [".tenantry/mesh.key", ".tenantry/postgres/data/PG_VERSION", "node_modules/pg/package.json", ".git/HEAD", "test-results.json"]) {
      expect(excluded(file), file).toBe(true);
    }
    expect(["package.json", "package-lock.json", ...shippedFiles].filter(excluded)).toEqual([]);
  });
});
