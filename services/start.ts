// `npm start`: PostgreSQL (embedded unless TENANTRY_DATABASE_URL is set), then
// every service of services/registry.ts, each its own process on its ports
// (TENANTRY_<NAME>_GRPC_PORT and _HTTP_PORT), and the browser client. Ctrl-C
// stops everything. Any failure to start prints one message with its cause
// and remedy, exits non-zero and leaves nothing running.
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { z } from "zod";
import { buildWebClient, webClientDir } from "./backend/web/build.ts";
import { startWebServer, type WebServer } from "./backend/web/web-server.ts";
import {
  commonEnv,
  ConfigError,
  loadSecret,
  readConfig,
  startEmbeddedDatabase,
  StartError,
  type EmbeddedDatabase,
} from "./mesh/index.ts";
import { portVariables, registry, schemaServicesSetting } from "./registry.ts";
import { checkPortsFree, type PortSetting } from "./start-checks.ts";

/** A port `npm start` listens on: 1–65535 (not 0, since the printed addresses must be known). */
const fixedPort = z.coerce.number().int().min(1).max(65535);

const settings = {
  TENANTRY_DATABASE_URL: z.url({ protocol: /^postgres(ql)?$/, error: "expected a postgres:// URL" }).optional(),
  TENANTRY_DATA_DIR: z.string().default(".tenantry"),
  TENANTRY_EMBEDDED_POSTGRES_PORT: fixedPort.default(54329),
  TENANTRY_WEB_PORT: fixedPort.default(8080),
  TENANTRY_BIND_HOST: commonEnv.TENANTRY_BIND_HOST,
  TENANTRY_MESH_KEY: commonEnv.TENANTRY_MESH_KEY,
  TENANTRY_OPERATOR_TOKEN: commonEnv.TENANTRY_OPERATOR_TOKEN,
  TENANTRY_CORS_ORIGINS: z.string().optional(),
};

/** Each service's ports, by their variables (TENANTRY_AUTH_GRPC_PORT, …), defaulting to the registry's. */
const servicePorts = Object.fromEntries(
  registry.flatMap((service) => {
    const variables = portVariables(service);
    return [
      [variables.grpc, fixedPort.default(service.grpcPort)],
      [variables.http, fixedPort.default(service.httpPort)],
    ];
  }),
);

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
const cleanups: (() => Promise<unknown>)[] = [];
const children: ChildProcess[] = [];
let stopping = false;

async function stopAll(code: number): Promise<never> {
  stopping = true;
  await Promise.all(
    children.map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) {
            return resolve();
          }
          child.once("exit", () => resolve());
          child.kill("SIGTERM");
        }),
    ),
  );
  for (const cleanup of cleanups.reverse()) {
    await cleanup().catch(() => undefined);
  }
  process.exit(code);
}

/** Prints why the mesh cannot start and what to do, stops what did start, and exits. */
async function fail(error: unknown): Promise<never> {
  if (error instanceof ConfigError) {
    process.stderr.write(`Tenantry cannot start: configuration error\n${error.message}\n`);
    await stopAll(78);
  }
  if (error instanceof StartError) {
    process.stderr.write(`Tenantry cannot start: ${error.message}.\nTo fix it: ${error.remedy}.\n`);
  } else {
    const code = (error as NodeJS.ErrnoException).code;
    const detail = error instanceof Error ? error.message : String(error);
    process.stderr.write(
      code === "EACCES" || code === "EPERM" || code === "EROFS"
        ? `Tenantry cannot start: ${detail}.\nTo fix it: set TENANTRY_DATA_DIR to a folder you can write.\n`
        : code === "ENOSPC"
          ? `Tenantry cannot start: no space left on the device (${detail}).\nTo fix it: free some space, or set TENANTRY_DATA_DIR to a folder on another device.\n`
          : `Tenantry cannot start: ${detail}\n`,
    );
  }
  return stopAll(1);
}

process.once("SIGINT", () => void stopAll(0));
process.once("SIGTERM", () => void stopAll(0));

try {
  // One read, so that an error names every variable at fault.
  const config: z.infer<z.ZodObject<typeof settings>> & Record<string, unknown> = readConfig({ ...settings, ...servicePorts });
  const host = config.TENANTRY_BIND_HOST;
  const dataDir = path.resolve(config.TENANTRY_DATA_DIR);
  const services = registry.map((service) => {
    const variables = portVariables(service);
    return { ...service, variables, grpc: config[variables.grpc] as number, http: config[variables.http] as number };
  });
  const ports: PortSetting[] = [
    ...services.flatMap((s) => [
      { variable: s.variables.grpc, port: s.grpc, host },
      { variable: s.variables.http, port: s.http, host },
    ]),
    { variable: "TENANTRY_WEB_PORT", port: config.TENANTRY_WEB_PORT, host },
    ...(config.TENANTRY_DATABASE_URL === undefined
      ? [{ variable: "TENANTRY_EMBEDDED_POSTGRES_PORT", port: config.TENANTRY_EMBEDDED_POSTGRES_PORT, host: "127.0.0.1" }]
      : []),
  ];
  // Before anything starts, so that a taken port leaves nothing half-started.
  await checkPortsFree(ports);

  // Generated here, before the services start, so that the path can be printed.
  const operatorToken = await loadSecret({ value: config.TENANTRY_OPERATOR_TOKEN, dataDir, file: "operator.token" });
  await loadSecret({ value: config.TENANTRY_MESH_KEY, dataDir, file: "mesh.key" });

  await buildWebClient(webClientDir);
  const web: WebServer = await startWebServer({ dir: webClientDir, host, port: config.TENANTRY_WEB_PORT });
  cleanups.push(() => web.close());
  // The page calls the services from its own origin; a user's own list replaces this one.
  const corsOrigins = config.TENANTRY_CORS_ORIGINS ?? `http://127.0.0.1:${web.port},http://localhost:${web.port}`;

  let database: EmbeddedDatabase | undefined;
  let databaseUrl = config.TENANTRY_DATABASE_URL;
  if (databaseUrl === undefined) {
    const dir = path.join(dataDir, "postgres");
    process.stdout.write(`starting embedded PostgreSQL on 127.0.0.1:${config.TENANTRY_EMBEDDED_POSTGRES_PORT}\n`);
    database = await startEmbeddedDatabase({ dir, port: config.TENANTRY_EMBEDDED_POSTGRES_PORT });
    cleanups.push(() => database!.stop());
    databaseUrl = database.urlFor("tenantry_platform");
  }

  // The mesh finds Platform and Auth by name, and the browser client calls Auth and Backend.
  const running = (name: string) => services.find((s) => s.name === name)!;
  const address = (name: string) => `${host}:${running(name).grpc}`;
  for (const service of services) {
    const child = spawn(process.execPath, [path.join(root, service.main)], {
      stdio: ["ignore", "inherit", "inherit"],
      env: {
        ...process.env,
        TENANTRY_DATA_DIR: dataDir,
        TENANTRY_GRPC_PORT: String(service.grpc),
        TENANTRY_HTTP_PORT: String(service.http),
        TENANTRY_PLATFORM_ADDRESS: address("platform"),
        TENANTRY_AUTH_ADDRESS: address("auth"),
        TENANTRY_SCHEMA_SERVICES: schemaServicesSetting(services, (s) => `${host}:${s.grpc}`),
        TENANTRY_CORS_ORIGINS: corsOrigins,
        ...(service.secrets?.includes("TENANTRY_DATABASE_URL") ? { TENANTRY_DATABASE_URL: databaseUrl } : {}),
      },
    });
    children.push(child);
    child.once("exit", (code, signal) => {
      if (!stopping) {
        process.stderr.write(`Tenantry stopped: ${service.name} exited (${signal ?? code}); its log above says why\n`);
        void stopAll(1);
      }
    });
  }

  for (const service of services) {
    const deadline = Date.now() + 60_000;
    while (!(await fetch(`http://${host}:${service.http}/readyz`).then((r) => r.ok, () => false))) {
      if (Date.now() > deadline) {
        throw new StartError(`${service.name} did not become ready within 60 s`, "its log above says why");
      }
      await sleep(200);
    }
  }

  const at = (port: number) => `http://${host}:${port}`;
  const [platform, auth, backend] = [running("platform"), running("auth"), running("backend")];
  const width = Math.max(...services.map((s) => s.name.length), "database".length) + 2;
  const token = operatorToken.path === undefined ? "$TENANTRY_OPERATOR_TOKEN" : `$(cat ${path.relative(process.cwd(), operatorToken.path)})`;
  const databaseLine =
    database === undefined
      ? "TENANTRY_DATABASE_URL"
      : `embedded PostgreSQL on 127.0.0.1:${database.port}, data in ${database.dataLink === undefined ? database.dataDir : `${database.dataDir}\n            (linked from ${database.dataLink}: the "postgres" system user the server runs as cannot enter a folder above it)`}`;
  process.stdout.write(`
Tenantry is running.
${services.map((s) => `  ${s.name.padEnd(width)}gRPC ${host}:${s.grpc}   HTTP ${at(s.http)}\n`).join("")}  ${"database".padEnd(width)}${databaseLine}

Browser client (log in, write and list entries over Connect or gRPC-Web):
  ${web.origin}/?auth=${at(auth.http)}&backend=${at(backend.http)}
  browser origins allowed by the services: ${corsOrigins}

Operator token (for Platform's operator methods): ${operatorToken.path ?? "TENANTRY_OPERATOR_TOKEN"}

Try it (in another terminal):
  npx buf curl --protocol grpc --http2-prior-knowledge -H "authorization: Bearer ${token}" -d '{"tenantId":"acme","ownerEmail":"owner@acme.example","ownerPassword":"correct horse battery"}' ${at(platform.grpc)}/tenantry.platform.v1.PlatformService/CreateTenant
  TOKEN=$(npx buf curl --protocol grpc --http2-prior-knowledge -H 'x-tenant-id: acme' -d '{"email":"owner@acme.example","password":"correct horse battery"}' ${at(auth.grpc)}/tenantry.auth.v1.AuthService/Login | node -pe 'JSON.parse(require("fs").readFileSync(0)).accessToken')
  npx buf curl --protocol grpc --http2-prior-knowledge -H 'x-tenant-id: acme' -H "authorization: Bearer $TOKEN" -d '{"title":"hello","tags":["demo"]}' ${at(backend.grpc)}/tenantry.backend.v1.EntryService/CreateEntry
  npx buf curl --protocol grpc --http2-prior-knowledge -H 'x-tenant-id: acme' -H "authorization: Bearer $TOKEN" -d '{}' ${at(backend.grpc)}/tenantry.backend.v1.EntryService/ListEntries
  npx buf curl --protocol grpc --http2-prior-knowledge --list-methods ${at(backend.grpc)}

Ctrl-C stops everything.
`);
} catch (error) {
  await fail(error);
}
