// npm run bench:memory: what a service process holds per tenant it knows
// and no longer serves. Backend (bench/backend-idle-tenants.ts: routes and
// key sets made per tenant, one shared database) serves one GetEntry for
// each of BENCH_IDLE_TENANTS (default 10,000) tenants, tokens verified,
// within a budget of 64 connections; once its connections have closed as
// idle, its memory after garbage collection is compared with the same
// process before, when it knew 10 tenants.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { once } from "node:events";
import path from "node:path";
import pg from "pg";
import { EntryService } from "../gen/tenantry/backend/v1/entry_service_pb.js";
import { freePort } from "../services/testing/free-port.ts";
import { root, startBenchProcesses } from "./bench-processes.ts";
import { goalTable, table } from "./report.ts";

const tenantCount = Number(process.env.BENCH_IDLE_TENANTS ?? 10_000);
const warmTenants = 10;
const concurrency = 16;
const idleTimeoutMs = 1000;

/** What the Backend reports of its memory, in bytes (see bench/backend-idle-tenants.ts). */
type Memory = NodeJS.MemoryUsage & { heapCommitted: number; mallocedMemory: number };

const bench = await startBenchProcesses({ ephemeral: true });
try {
  const admin = new pg.Client({ connectionString: bench.database.url });
  await admin.connect();
  await admin.query("create database bench_idle");
  await admin.end();
  const shared = new pg.Client({ connectionString: bench.database.urlFor("bench_idle") });
  await shared.connect();
  await shared.query("create schema backend");
  await shared.query(
    `create table backend.entries (id uuid primary key, title varchar(200) not null, body text not null default '', tags text[] not null default '{}', version integer not null default 1, created_at timestamptz(3) not null default now(), updated_at timestamptz(3) not null default now())`,
  );
  const { rows } = await shared.query<{ id: string }>("insert into backend.entries (id, title, body, tags) values (gen_random_uuid(), 'shared', 'x', '{a}') returning id");
  await shared.end();
  const entryId = rows[0]!.id;

  const { privateKey, publicKey } = await generateKeyPair("EdDSA", { crv: "Ed25519" });
  const grpcPort = await freePort();
  const backend = await bench.start(
    "backend (idle tenants)",
    path.join(root, "bench/backend-idle-tenants.ts"),
    {
      ...bench.shared,
      TENANTRY_GRPC_PORT: String(grpcPort),
      TENANTRY_HTTP_PORT: String(await freePort()),
      TENANTRY_PLATFORM_ADDRESS: "127.0.0.1:1",
      TENANTRY_AUTH_ADDRESS: "127.0.0.1:1",
      TENANTRY_DB_MAX_CONNECTIONS: "64",
      TENANTRY_DB_IDLE_TIMEOUT_MS: String(idleTimeoutMs),
      BENCH_TENANT_DATABASE_URL: bench.database.urlFor("bench_idle"),
      BENCH_PUBLIC_JWK: JSON.stringify(await exportJWK(publicKey)),
    },
    ["--expose-gc"],
  );

  /** The process's memory after garbage collection, in bytes. */
  const memory = async (): Promise<Memory> => {
    const line = new Promise<Memory>((resolve) => {
      const read = (chunk: Buffer) => {
        const found = /\{"memory":.*\}/.exec(chunk.toString());
        if (found !== null) {
          backend.stdout!.off("data", read);
          resolve((JSON.parse(found[0]) as { memory: Memory }).memory);
        }
      };
      backend.stdout!.on("data", read);
    });
    backend.kill("SIGUSR2");
    return line;
  };
  /** Waits until the idle connections have closed (and a little more), then reads the memory: the lowest of three reads. */
  const settledMemory = async (): Promise<Memory> => {
    await new Promise((resolve) => setTimeout(resolve, idleTimeoutMs * 3));
    const reads = [await memory(), await memory(), await memory()];
    return reads.reduce((low, m) => (m.heapUsed + m.external < low.heapUsed + low.external ? m : low));
  };

  const client = new grpc.Client(`127.0.0.1:${grpcPort}`, grpc.credentials.createInsecure());
  const method = EntryService.method.getEntry;
  const request = create(method.input, { id: entryId });
  let errors = 0;
  const serve = async (from: number, to: number) => {
    let next = from;
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < to) {
          const tenantId = `idle-${next++}`;
          const token = await new SignJWT({ tid: tenantId, permissions: ["entries.read"] })
            .setProtectedHeader({ alg: "EdDSA", kid: tenantId, typ: "at+jwt" })
            .setIssuer("tenantry")
            .setSubject("user-1")
            .setIssuedAt()
            .setExpirationTime("1h")
            .sign(privateKey);
          const metadata = new grpc.Metadata();
          metadata.set("x-tenant-id", tenantId);
          metadata.set("authorization", `Bearer ${token}`);
          await new Promise<void>((resolve) =>
            client.makeUnaryRequest(
              `/${EntryService.typeName}/GetEntry`,
              (m: unknown) => Buffer.from(toBinary(method.input, m as never)),
              (b: Buffer) => fromBinary(method.output, b),
              request,
              metadata,
              (error) => {
                if (error !== null && errors++ === 0) {
                  process.stderr.write(`first failure: ${error.message}\n`);
                }
                resolve();
              },
            ),
          );
        }
      }),
    );
  };

  process.stdout.write(`${warmTenants} tenants…\n`);
  await serve(0, warmTenants);
  const before = await settledMemory();
  process.stdout.write(`${tenantCount - warmTenants} more tenants…\n`);
  const started = performance.now();
  await serve(warmTenants, tenantCount);
  const seconds = (performance.now() - started) / 1000;
  const after = await settledMemory();
  client.close();

  const known = tenantCount - warmTenants;
  const kb = (bytes: number) => bytes / 1024;
  const perTenant = (key: keyof Memory) => kb(after[key] - before[key]) / known;
  const js = kb(after.heapUsed + after.external - before.heapUsed - before.external) / known;
  process.stdout.write(`
Backend holding ${tenantCount} known idle tenants (one GetEntry each, tokens verified, 64 connections; ${(known / seconds).toFixed(0)} tenants/s), memory after garbage collection
${table(
  ["", "RSS MB", "heap used MB", "external MB", "heap committed MB", "V8 malloced MB"],
  [
    [`knowing ${warmTenants} tenants`, ...[before.rss, before.heapUsed, before.external, before.heapCommitted, before.mallocedMemory].map((b) => (b / 2 ** 20).toFixed(1))],
    [`knowing ${tenantCount} tenants`, ...[after.rss, after.heapUsed, after.external, after.heapCommitted, after.mallocedMemory].map((b) => (b / 2 ** 20).toFixed(1))],
    ["per tenant, KB", perTenant("rss").toFixed(2), perTenant("heapUsed").toFixed(2), perTenant("external").toFixed(2), perTenant("heapCommitted").toFixed(2), perTenant("mallocedMemory").toFixed(2)],
  ],
)}

Goal: memory per idle tenant
${goalTable([
  { measure: "JavaScript memory (heap and external) per known idle tenant, KB", figure: js, shown: js.toFixed(2), atMost: 10, goal: "≤ 10" },
  { measure: "resident memory (RSS) per known idle tenant, KB", figure: perTenant("rss"), shown: perTenant("rss").toFixed(2), atMost: 10, goal: "≤ 10" },
  { measure: "errors", figure: errors, shown: String(errors), atMost: 0, goal: "0" },
])}
`);
  backend.kill("SIGTERM");
  await once(backend, "exit");
} finally {
  await bench.stop();
}
