// `npm start`: PostgreSQL (embedded unless TENANTRY_DATABASE_URL is set), then
// Platform, Auth and Backend, each its own process, on the default ports, and
// the browser client on a port of its own. Ctrl-C stops everything.
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { z } from "zod";
import { buildWebClient, webClientDir } from "./backend/web/build.ts";
import { startWebServer } from "./backend/web/web-server.ts";
import { commonEnv, loadSecret, port, readConfig, startEmbeddedDatabase, type EmbeddedDatabase } from "./mesh/index.ts";

const config = readConfig({
  TENANTRY_DATABASE_URL: z.url({ protocol: /^postgres(ql)?$/, error: "expected a postgres:// URL" }).optional(),
  TENANTRY_DATA_DIR: z.string().default(".tenantry"),
  TENANTRY_EMBEDDED_POSTGRES_PORT: port.default(54329),
  TENANTRY_BIND_HOST: commonEnv.TENANTRY_BIND_HOST,
  TENANTRY_MESH_KEY: commonEnv.TENANTRY_MESH_KEY,
  TENANTRY_OPERATOR_TOKEN: commonEnv.TENANTRY_OPERATOR_TOKEN,
  TENANTRY_CORS_ORIGINS: z.string().optional(),
  TENANTRY_WEB_PORT: port.default(8080),
});
const here = path.dirname(new URL(import.meta.url).pathname);
const host = config.TENANTRY_BIND_HOST;
const dataDir = path.resolve(config.TENANTRY_DATA_DIR);
// Generated here, before the services start, so that the path can be printed.
const operatorToken = await loadSecret({ value: config.TENANTRY_OPERATOR_TOKEN, dataDir, file: "operator.token" });
await loadSecret({ value: config.TENANTRY_MESH_KEY, dataDir, file: "mesh.key" });

const services = [
  { name: "platform", grpc: 50051, http: 8081 },
  { name: "auth", grpc: 50052, http: 8082 },
  { name: "backend", grpc: 50053, http: 8083 },
] as const;

// Before PostgreSQL and the services start, so that a taken port leaves nothing half-started.
await buildWebClient(webClientDir);
const web = await startWebServer({ dir: webClientDir, host, port: config.TENANTRY_WEB_PORT }).catch((error: Error) => {
  process.stderr.write(`cannot serve the browser client: ${error.message} (set TENANTRY_WEB_PORT)\n`);
  process.exit(1);
});
// The page calls the services from its own origin; a user's own list replaces this one.
const corsOrigins = config.TENANTRY_CORS_ORIGINS ?? `http://127.0.0.1:${web.port},http://localhost:${web.port}`;

let database: EmbeddedDatabase | undefined;
let databaseUrl = config.TENANTRY_DATABASE_URL;
if (databaseUrl === undefined) {
  const dir = path.join(dataDir, "postgres");
  process.stdout.write(`starting embedded PostgreSQL on 127.0.0.1:${config.TENANTRY_EMBEDDED_POSTGRES_PORT} (data in ${dir})\n`);
  database = await startEmbeddedDatabase({ dir, port: config.TENANTRY_EMBEDDED_POSTGRES_PORT });
  databaseUrl = database.urlFor("tenantry_platform");
}

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
  await Promise.all([database?.stop(), web.close()]);
  process.exit(code);
}
process.once("SIGINT", () => void stopAll(0));
process.once("SIGTERM", () => void stopAll(0));

for (const service of services) {
  const child = spawn(process.execPath, [path.join(here, service.name, "main.ts")], {
    stdio: ["ignore", "inherit", "inherit"],
    env: {
      ...process.env,
      TENANTRY_DATA_DIR: dataDir,
      TENANTRY_GRPC_PORT: String(service.grpc),
      TENANTRY_HTTP_PORT: String(service.http),
      TENANTRY_PLATFORM_ADDRESS: `${host}:50051`,
      TENANTRY_AUTH_ADDRESS: `${host}:50052`,
      TENANTRY_SCHEMA_SERVICES: `auth=${host}:50052,backend=${host}:50053`,
      TENANTRY_CORS_ORIGINS: corsOrigins,
      ...(service.name === "platform" ? { TENANTRY_DATABASE_URL: databaseUrl } : {}),
    },
  });
  children.push(child);
  child.once("exit", (code, signal) => {
    if (!stopping) {
      process.stderr.write(`${service.name} exited (${signal ?? code}); stopping the mesh\n`);
      void stopAll(1);
    }
  });
}

for (const service of services) {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const ready = await fetch(`http://${host}:${service.http}/readyz`).then((r) => r.ok, () => false);
    if (ready) {
      break;
    }
    if (Date.now() > deadline) {
      process.stderr.write(`${service.name} did not become ready within 60 s\n`);
      await stopAll(1);
    }
    await sleep(200);
  }
}

const platform = `http://${host}:50051`;
const token = operatorToken.path === undefined ? "$TENANTRY_OPERATOR_TOKEN" : `$(cat ${path.relative(process.cwd(), operatorToken.path)})`;
const auth = `http://${host}:50052`;
const backend = `http://${host}:50053`;
process.stdout.write(`
Tenantry is running.
  platform  gRPC ${host}:50051   HTTP http://${host}:8081
  auth      gRPC ${host}:50052   HTTP http://${host}:8082
  backend   gRPC ${host}:50053   HTTP http://${host}:8083
  database  ${database ? `embedded PostgreSQL on 127.0.0.1:${database.port}` : "TENANTRY_DATABASE_URL"}

Browser client (log in, write and list entries over Connect or gRPC-Web):
  ${web.origin}/?auth=http://${host}:8082&backend=http://${host}:8083
  browser origins allowed by the services: ${corsOrigins}

Operator token (for Platform's operator methods): ${operatorToken.path ?? "TENANTRY_OPERATOR_TOKEN"}

Try it (in another terminal):
  npx buf curl --protocol grpc --http2-prior-knowledge -H "authorization: Bearer ${token}" -d '{"tenantId":"acme","ownerEmail":"owner@acme.example","ownerPassword":"correct horse battery"}' ${platform}/tenantry.platform.v1.PlatformService/CreateTenant
  TOKEN=$(npx buf curl --protocol grpc --http2-prior-knowledge -H 'x-tenant-id: acme' -d '{"email":"owner@acme.example","password":"correct horse battery"}' ${auth}/tenantry.auth.v1.AuthService/Login | node -pe 'JSON.parse(require("fs").readFileSync(0)).accessToken')
  npx buf curl --protocol grpc --http2-prior-knowledge -H 'x-tenant-id: acme' -H "authorization: Bearer $TOKEN" -d '{"title":"hello","tags":["demo"]}' ${backend}/tenantry.backend.v1.EntryService/CreateEntry
  npx buf curl --protocol grpc --http2-prior-knowledge -H 'x-tenant-id: acme' -H "authorization: Bearer $TOKEN" -d '{}' ${backend}/tenantry.backend.v1.EntryService/ListEntries
  npx buf curl --protocol grpc --http2-prior-knowledge --list-methods ${backend}

Ctrl-C stops everything.
`);
