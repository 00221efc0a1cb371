import { spawn } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { nextFreePorts } from "../services/cli/new-service/new-service.ts";
import { serviceNaming } from "../services/cli/new-service/service-naming.ts";
import { portVariables, registry } from "../services/registry.ts";
import { copyWholeCheckout } from "../services/testing/checkout-copy.ts";
import { freePort } from "../services/testing/free-port.ts";

// docs/adding-a-service.md followed, command by command, in a copy of this
// checkout (as it is, changes not committed included): the scaffold, then
// npm run check, the new service's own specs, and npm start.

/** The guide's example; if a service of that name is registered by now, the same steps for another. */
const service = registry.some((s) => s.name === "billing") ? "guide-example" : "billing";
const naming = serviceNaming(service, "item");
/** The ports the scaffold gives it: the next free pair after the registered services'. */
const ports = nextFreePorts(registry);

let scratch: string;
let checkout: string;
beforeAll(async () => {
  scratch = await mkdtemp(path.join(os.tmpdir(), "tenantry-new-service-"));
  await chmod(scratch, 0o755);
  checkout = path.join(scratch, "tenantry");
  await copyWholeCheckout(checkout);
}, 120_000);
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

interface Run {
  code: number | null;
  output: string;
}

/** Runs a command of the guide in the copy, with the tests' PostgreSQL for the specs it runs, and none of this process's settings. */
function run(command: string, args: string[]): Promise<Run> {
  const env = { PATH: process.env.PATH!, HOME: process.env.HOME ?? scratch, TENANTRY_TEST_DATABASE_URL: inject("databaseUrl") };
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: checkout, env, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, output }));
  });
}

/** The copy's changes since it was made: path and git's two-letter status (`??` new, ` M` changed). */
async function changes(): Promise<Map<string, string>> {
  const { output } = await run("git", ["status", "--porcelain=v1", "--untracked-files=all"]);
  return new Map(output.split("\n").filter((line) => line !== "").map((line) => [line.slice(3), line.slice(0, 2)]));
}

describe("adding a service as docs/adding-a-service.md says", () => {
  it("takes one command, which changes nothing outside the new folder but the registry entry, the contract and generated files", async () => {
    const scaffold = await run("npx", ["tenantry", "new-service", service]);
    expect(scaffold.output).toContain(`ports:       gRPC ${ports.grpcPort}, HTTP ${ports.httpPort}`);
    expect(scaffold.code, scaffold.output).toBe(0);

    const changed = await changes();
    const added = [...changed].filter(([, status]) => status === "??").map(([file]) => file);
    const contract = `tenantry/${naming.package}/v1/${naming.package}_service`;
    const folder = [
      `${service}-service.db.spec.ts`,
      `${service}-service.ts`,
      `${service}.ts`,
      "config.ts",
      "entities/item.ts",
      "item-rules.spec.ts",
      "item-rules.ts",
      "items.ts",
      "main.ts",
      "migrations/create-items.ts",
      "migrations/index.ts",
      "start.ts",
    ];
    expect(added.sort()).toEqual(
      [
        `deploy/k8s/services/${service}.yaml`,
        `gen/${contract}_pb.d.ts`,
        `gen/${contract}_pb.js`,
        `proto/${contract}.proto`,
        ...folder.map((file) => `services/${service}/${file}`),
      ].sort(),
    );
    const modified = [...changed].filter(([, status]) => status !== "??").map(([file]) => file);
    // The registry, and what deploy/manifests.ts makes of it; nothing in gen/ but the new contract's code.
    expect(modified.filter((file) => file !== "services/registry.ts" && file !== "deploy/Dockerfile" && !file.startsWith("deploy/k8s/services/"))).toEqual([]);
    const registryDiff = await run("git", ["diff", "--numstat", "services/registry.ts"]);
    expect(registryDiff.output.trim()).toMatch(/^\d+\t0\tservices\/registry.ts$/);
    const dockerfileDiff = await run("git", ["diff", "--unified=0", "deploy/Dockerfile"]);
    const grpc = registry.map((s) => s.grpcPort);
    const http = registry.map((s) => s.httpPort);
    expect(dockerfileDiff.output.split("\n").filter((line) => /^[-+][^-+]/.test(line))).toEqual([
      `-EXPOSE ${[...grpc, ...http].join(" ")}`,
      `+EXPOSE ${[...grpc, ports.grpcPort, ...http, ports.httpPort].join(" ")}`,
    ]);
  });

  it("passes npm run check at once", async () => {
    const check = await run("npm", ["run", "check"]);
    expect(check.code, check.output).toBe(0);
    expect(check.output).toContain("gen/ and proto/ have changes to commit together");
  });

  it("has specs of its own that pass: its rules, and the service in a mesh with tenants made before it was added, in both placements", async () => {
    const specs = await run("npx", ["vitest", "run", `services/${service}`]);
    expect(specs.code, specs.output).toBe(0);
    const output = specs.output.replace(/\x1b\[[0-9;]*m/g, "");
    expect(output).toContain(`services/${service}/item-rules.spec.ts`);
    // Its three tests, each against a dedicated tenant and a pooled one.
    expect(output).toContain(`services/${service}/${service}-service.db.spec.ts (6 tests)`);
  });

  it("runs in npm start, serving its contract to a tenant's owner over Connect", async () => {
    const variables = [...registry, { name: service }].flatMap((s) => Object.values(portVariables(s)));
    const listening: Record<string, string> = {};
    for (const variable of [...variables, "TENANTRY_WEB_PORT"]) {
      listening[variable] = String(await freePort());
    }
    const platformUrl = new URL(inject("databaseUrl"));
    platformUrl.pathname = `/tenantry_platform_${randomBytes(4).toString("hex")}`;
    const operatorToken = randomBytes(32).toString("base64url");
    const child = spawn(process.execPath, ["services/start.ts"], {
      cwd: checkout,
      env: {
        PATH: process.env.PATH,
        ...listening,
        TENANTRY_DATABASE_URL: platformUrl.toString(),
        TENANTRY_DATA_DIR: path.join(scratch, "data"),
        TENANTRY_OPERATOR_TOKEN: operatorToken,
        TENANTRY_LOG_LEVEL: "warn",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (chunk) => (output += chunk));
    child.stderr.on("data", (chunk) => (output += chunk));
    const http = (name: string) => `http://127.0.0.1:${listening[portVariables({ name }).http]}`;
    /** A Connect call with a JSON body; throws with the answer unless it is 200. */
    const call = async (url: string, body: object, headers: Record<string, string> = {}) => {
      const response = await fetch(url, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) });
      const answer = (await response.json()) as Record<string, any>;
      if (response.status !== 200) {
        throw new Error(`${url}: ${response.status} ${JSON.stringify(answer)}`);
      }
      return answer;
    };
    try {
      const deadline = Date.now() + 90_000;
      while (!output.includes("Tenantry is running.")) {
        if (child.exitCode !== null || Date.now() > deadline) {
          throw new Error(`npm start did not start; it printed:\n${output}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      expect(output).toContain(`gRPC 127.0.0.1:${listening[portVariables({ name: service }).grpc]}`);

      const owner = { email: "owner@acme.example", password: "correct horse battery" };
      await call(`${http("platform")}/tenantry.platform.v1.PlatformService/CreateTenant`, { tenantId: "acme", ownerEmail: owner.email, ownerPassword: owner.password }, {
        authorization: `Bearer ${operatorToken}`,
      });
      const { accessToken } = await call(`${http("auth")}/tenantry.auth.v1.AuthService/Login`, owner, { "x-tenant-id": "acme" });
      const asOwner = { "x-tenant-id": "acme", authorization: `Bearer ${accessToken}` };
      const rpcService = `tenantry.${naming.package}.v1.${naming.Pascal}Service`;
      const created = await call(`${http(service)}/${rpcService}/CreateItem`, { displayName: "first", requestId: randomUUID() }, asOwner);
      const listed = await call(`${http(service)}/${rpcService}/ListItems`, {}, asOwner);
      expect(listed.items).toEqual([created.item]);
    } finally {
      child.kill("SIGINT");
      if (child.exitCode === null) {
        await new Promise((resolve) => child.once("exit", resolve));
      }
    }
    expect(child.exitCode, output).toBe(0);
  });
});
