// npm run bench:restart: PostgreSQL crashing (SIGQUIT, as pg_ctl stop -m
// immediate) and starting again under load, BENCH_RESTARTS times (default
// 5). Backend takes CreateEntry on three dedicated tenants, Auth WhoAmI, Platform
// GetTenant, from callers that retry at once; a watcher follows Platform's
// WatchTenants. Measured per restart: how long the server was down, the
// time from the server accepting connections again to each service's first
// successful call (and to the change feed listening again), and the failed
// calls by code. At the end, every acknowledged entry is looked for.
// Durable PostgreSQL: without synchronous commit a crash loses commits that
// were acknowledged. BENCH_STEADY_SECONDS (default 3) of load between restarts.
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { AuthService } from "../gen/tenantry/auth/v1/auth_service_pb.js";
import { EntryService } from "../gen/tenantry/backend/v1/entry_service_pb.js";
import { Placement, PlatformService } from "../gen/tenantry/platform/v1/platform_service_pb.js";
import { createGrpcJsTransport, MeshCredentials, operatorCredentialInterceptor } from "../services/mesh/index.ts";
import { quantile, startBenchMesh, startBenchProcesses } from "./bench-processes.ts";
import { goalTable } from "./report.ts";

const restarts = Number(process.env.BENCH_RESTARTS ?? 5);
const steadySeconds = Number(process.env.BENCH_STEADY_SECONDS ?? 3);
const tenantIds = ["restart-a", "restart-b", "restart-c"];
const password = "bench-password";
type Service = "backend" | "auth" | "platform";
const services: Service[] = ["backend", "auth", "platform"];

/** One call's outcome, with when it ended (ms, performance.now()). */
interface Outcome {
  service: Service;
  endedAt: number;
  code: Code | undefined;
}

const bench = await startBenchProcesses({ ephemeral: false });
try {
  // Quiet: every call failing during the outage is logged as a warning.
  const mesh = await startBenchMesh(bench, { env: { TENANTRY_LOG_LEVEL: "error" } });
  const platformTransport = createGrpcJsTransport({ address: `127.0.0.1:${mesh.ports.platform}`, interceptors: [operatorCredentialInterceptor(bench.operatorToken)] });
  const platform = createClient(PlatformService, platformTransport);
  const meshCredentials = new MeshCredentials({ meshKey: bench.shared.TENANTRY_MESH_KEY!, operatorToken: bench.operatorToken, service: "bench" });
  const watchTransport = createGrpcJsTransport({ address: `127.0.0.1:${mesh.ports.platform}`, interceptors: [meshCredentials.clientInterceptor()] });
  const watcher = createClient(PlatformService, watchTransport);
  const authTransport = createGrpcJsTransport({ address: `127.0.0.1:${mesh.ports.auth}` });
  const auth = createClient(AuthService, authTransport);
  const backendTransport = createGrpcJsTransport({ address: `127.0.0.1:${mesh.ports.backend}` });
  const entries = createClient(EntryService, backendTransport);

  const tokens = new Map<string, string>();
  for (const tenantId of tenantIds) {
    await platform.createTenant({ tenantId, placement: Placement.DEDICATED, ownerEmail: "owner@example.com", ownerPassword: password });
    const { accessToken } = await auth.login({ email: "owner@example.com", password }, { headers: { "x-tenant-id": tenantId } });
    tokens.set(tenantId, accessToken);
  }
  const headers = (tenantId: string) => ({ "x-tenant-id": tenantId, authorization: `Bearer ${tokens.get(tenantId)}` });

  const outcomes: Outcome[] = [];
  const acknowledged = new Map<string, string[]>(tenantIds.map((t) => [t, []]));
  let running = true;
  const loop = (service: Service, call: (i: number) => Promise<unknown>) =>
    (async () => {
      for (let i = 0; running; i++) {
        let code: Code | undefined;
        try {
          await call(i);
        } catch (error) {
          code = ConnectError.from(error).code;
        }
        outcomes.push({ service, endedAt: performance.now(), code });
        if (code !== undefined) {
          // A client retrying at once, without spinning.
          await sleep(2);
        }
      }
    })();
  const loops = [
    ...tenantIds.flatMap((tenantId) =>
      [0, 1, 2].map(() =>
        loop("backend", async () => {
          const { entry } = await entries.createEntry({ title: "across a restart", body: "x".repeat(200) }, { headers: headers(tenantId) });
          acknowledged.get(tenantId)!.push(entry!.id);
        }),
      ),
    ),
    loop("auth", (i) => auth.whoAmI({}, { headers: headers(tenantIds[i % tenantIds.length]!) })),
    loop("platform", (i) => platform.getTenant({ tenantId: tenantIds[i % tenantIds.length]! })),
  ];

  /** When the change feed last started listening (performance.now()). */
  let feedListeningAt = 0;
  const watching = new AbortController();
  const feed = (async () => {
    while (!watching.signal.aborted) {
      try {
        for await (const change of watcher.watchTenants({}, { signal: watching.signal })) {
          if (change.tenantId === "") {
            feedListeningAt = performance.now();
          }
        }
      } catch {
        await sleep(2);
      }
    }
  })();

  /** When a connection to the server first succeeds from `since` on. */
  async function acceptingAfter(since: number): Promise<number> {
    for (;;) {
      const client = new pg.Client({ connectionString: bench.database.url, connectionTimeoutMillis: 1000 });
      client.on("error", () => {});
      try {
        await client.connect();
        await client.query("select 1");
        return performance.now();
      } catch {
        await sleep(2);
      } finally {
        await client.end().catch(() => undefined);
      }
      if (performance.now() - since > 120_000) {
        throw new Error("PostgreSQL did not accept connections within 120 s of its restart");
      }
    }
  }

  interface Round {
    downMs: number;
    firstSuccessMs: Record<Service | "feed", number>;
    failed: Map<string, number>;
    writesPerSecond: number;
  }
  const rounds: Round[] = [];
  process.stdout.write(`${restarts} restarts under load…\n`);
  for (let r = 0; r < restarts; r++) {
    const steadyFrom = outcomes.length;
    const steadyStarted = performance.now();
    await sleep(steadySeconds * 1000);
    const steadyWrites = outcomes.slice(steadyFrom).filter((o) => o.service === "backend" && o.code === undefined).length;
    const writesPerSecond = steadyWrites / ((performance.now() - steadyStarted) / 1000);

    const from = outcomes.length;
    const crashedAt = performance.now();
    const restarting = bench.restartDatabase();
    const acceptedAt = await acceptingAfter(crashedAt);
    await restarting;
    // Every service and the feed back.
    const firstSuccessMs = {} as Record<Service | "feed", number>;
    for (;;) {
      for (const service of services) {
        const first = outcomes.slice(from).find((o) => o.service === service && o.code === undefined && o.endedAt >= acceptedAt);
        if (first !== undefined) {
          firstSuccessMs[service] = first.endedAt - acceptedAt;
        }
      }
      if (feedListeningAt >= acceptedAt) {
        firstSuccessMs.feed = feedListeningAt - acceptedAt;
      }
      if (Object.keys(firstSuccessMs).length === services.length + 1) {
        break;
      }
      if (performance.now() - acceptedAt > 60_000) {
        throw new Error(`not back within 60 s of the restart: ${services.filter((s) => !(s in firstSuccessMs)).join(", ")}`);
      }
      await sleep(10);
    }
    const failed = new Map<string, number>();
    for (const o of outcomes.slice(from)) {
      if (o.code !== undefined) {
        const key = `${o.service} ${Code[o.code]}`;
        failed.set(key, (failed.get(key) ?? 0) + 1);
      }
    }
    rounds.push({ downMs: acceptedAt - crashedAt, firstSuccessMs, failed, writesPerSecond });
    process.stdout.write(`restart ${r + 1}/${restarts}: down ${(acceptedAt - crashedAt).toFixed(0)} ms\n`);
  }
  running = false;
  watching.abort();
  await Promise.all([...loops, feed]);

  let written = 0;
  let missing = 0;
  for (const tenantId of tenantIds) {
    const { tenant } = await platform.getTenant({ tenantId });
    const client = new pg.Client({ connectionString: bench.database.urlFor(tenant!.database) });
    await client.connect();
    const ids = acknowledged.get(tenantId)!;
    const { rows } = await client.query<{ n: number }>("select count(*)::int as n from backend.entries where id = any($1::uuid[])", [ids]);
    await client.end();
    written += ids.length;
    missing += ids.length - rows[0]!.n;
  }
  platformTransport.close();
  watchTransport.close();
  authTransport.close();
  backendTransport.close();

  const ms = (n: number) => n.toFixed(0).padStart(8);
  const codes = (failed: Map<string, number>) => [...failed].map(([key, n]) => `${key} ${n}`).join(", ") || "none";
  const lines = rounds.map(
    (round, i) =>
      `| ${String(i + 1).padStart(7)} | ${round.writesPerSecond.toFixed(0).padStart(8)} | ${ms(round.downMs)} | ${ms(round.firstSuccessMs.backend)} | ${ms(round.firstSuccessMs.auth)} | ${ms(round.firstSuccessMs.platform)} | ${ms(round.firstSuccessMs.feed)} | ${codes(round.failed)}`,
  );
  const column = (pick: (round: Round) => number) => rounds.map(pick).sort((a, b) => a - b);
  const summaryLine = (name: string, q: number) =>
    `| ${name.padStart(7)} | ${quantile(column((r) => r.writesPerSecond), q).toFixed(0).padStart(8)} | ${ms(quantile(column((r) => r.downMs), q))} | ${ms(quantile(column((r) => r.firstSuccessMs.backend), q))} | ${ms(quantile(column((r) => r.firstSuccessMs.auth), q))} | ${ms(quantile(column((r) => r.firstSuccessMs.platform), q))} | ${ms(quantile(column((r) => r.firstSuccessMs.feed), q))} |`;
  const totals = new Map<string, number>();
  for (const round of rounds) {
    for (const [key, n] of round.failed) {
      totals.set(key, (totals.get(key) ?? 0) + n);
    }
  }
  const otherCodes = [...totals].filter(([key]) => !key.endsWith(" Unavailable")).reduce((n, [, count]) => n + count, 0);
  process.stdout.write(`
PostgreSQL crashed (SIGQUIT) and started again under load, ${restarts} times (durable PostgreSQL on this machine)
Columns after "down": ms from the server accepting connections again to the first successful call of each service
(Backend CreateEntry, Auth WhoAmI, Platform GetTenant) and to Platform's change feed listening again.
| restart | writes/s |  down ms | Backend  | Auth     | Platform | feed     | failed calls by code
|---------|----------|----------|----------|----------|----------|----------|---------------------
${lines.join("\n")}
${summaryLine("median", 0.5)}
${summaryLine("max", 1)}

failed calls over all restarts: ${codes(totals)}; acknowledged entries: ${written}

Goal: PostgreSQL restarting under load
${goalTable([
  { measure: "failed calls with another code than UNAVAILABLE", figure: otherCodes, shown: String(otherCodes), atMost: 0, goal: "0" },
  { measure: "acknowledged entries missing after the restarts", figure: missing, shown: String(missing), atMost: 0, goal: "0" },
])}
`);
} finally {
  await bench.stop();
}
