// npm run bench:fleet: a fleet migration that adds one migration to every
// tenant (BENCH_FLEET_TENANTS dedicated ones, default 1000), then the same call again with
// nothing pending, which the ledger answers without touching a tenant.
// BENCH_FLEET_CONCURRENCY (default 8) tenants at once.
import { createClient } from "@connectrpc/connect";
import { once } from "node:events";
import path from "node:path";
import { FleetService, MigrationOutcome } from "../gen/tenantry/platform/v1/fleet_service_pb.js";
import { Placement, PlatformService } from "../gen/tenantry/platform/v1/platform_service_pb.js";
import { createGrpcJsTransport, operatorCredentialInterceptor } from "../services/mesh/index.ts";
import { root, startBenchMesh, startBenchProcesses } from "./bench-processes.ts";
import { cpuSeconds, startCpuMeter } from "./cpu-meter.ts";
import { goalTable } from "./report.ts";

const tenantCount = Number(process.env.BENCH_FLEET_TENANTS ?? 1000);
const concurrency = Number(process.env.BENCH_FLEET_CONCURRENCY ?? 8);
const bench = await startBenchProcesses({ ephemeral: true });
try {
  const mesh = await startBenchMesh(bench);
  const transport = createGrpcJsTransport({ address: `127.0.0.1:${mesh.ports.platform}`, interceptors: [operatorCredentialInterceptor(bench.operatorToken)] });
  const platform = createClient(PlatformService, transport);
  const fleet = createClient(FleetService, transport);

  process.stdout.write(`provisioning ${tenantCount} tenants…\n`);
  const provisionStarted = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      while (next < tenantCount) {
        await platform.createTenant({ tenantId: `fleet-${next++}`, placement: Placement.DEDICATED });
      }
    }),
  );
  const provisionSeconds = (performance.now() - provisionStarted) / 1000;

  process.stdout.write("rolling out Backend's next version…\n");
  mesh.backend.kill("SIGTERM");
  await once(mesh.backend, "exit");
  const backend = await mesh.startBackend(path.join(root, "bench/backend-next.ts"));
  const platformPid = mesh.processes.platform!.pid!;

  async function migrateAll() {
    const started = performance.now();
    const platformBefore = await cpuSeconds(platformPid);
    const meter = await startCpuMeter(backend.pid!, bench.database.pid);
    const outcomes = new Map<string, number>();
    let last;
    for await (const event of fleet.migrateTenants({ concurrencyPerCluster: concurrency })) {
      const name = MigrationOutcome[event.outcome];
      outcomes.set(name, (outcomes.get(name) ?? 0) + 1);
      last = event.totals;
    }
    const seconds = (performance.now() - started) / 1000;
    const cpu = { ...(await meter()), platform: (await cpuSeconds(platformPid)) - platformBefore };
    return { seconds, outcomes: Object.fromEntries(outcomes), totals: last, cpu };
  }
  const first = await migrateAll();
  const again = await migrateAll();
  const status = await fleet.getFleetStatus({});
  transport.close();
  const perTenant = (seconds: number) => ((seconds * 1000) / tenantCount).toFixed(1);

  process.stdout.write(`
Fleet migration of ${tenantCount} tenants × 2 services, ${concurrency} tenants at once (PostgreSQL without fsync on this machine)
(provisioning them took ${provisionSeconds.toFixed(1)} s, ${(tenantCount / provisionSeconds).toFixed(1)} tenants/s with 4 at once)
| run                                         | seconds | tenants/s | outcomes |
|---------------------------------------------|---------|-----------|----------|
| one new Backend migration for every tenant  | ${first.seconds.toFixed(2).padStart(7)} | ${(tenantCount / first.seconds).toFixed(1).padStart(9)} | ${JSON.stringify(first.outcomes)} |
| the same call again, nothing pending        | ${again.seconds.toFixed(2).padStart(7)} | ${(tenantCount / again.seconds).toFixed(0).padStart(9)} | ${JSON.stringify(again.outcomes)} |

CPU per tenant of the rollout, ms: Backend ${perTenant(first.cpu.server)}, Platform ${perTenant(first.cpu.platform)}, PostgreSQL ${perTenant(first.cpu.postgres)}, this process ${perTenant(first.cpu.client)}; other work on the machine meanwhile ${perTenant(first.cpu.others - first.cpu.platform)} (${((first.cpu.others - first.cpu.platform) / first.seconds).toFixed(2)} cores)

fleet status: ${status.services.map((s) => `${s.service} ${s.latestVersion}: ${s.current} current, ${s.behind} behind, ${s.failed} failed`).join("; ")}

Goal: fleet migrations
${goalTable([
  { measure: "one new migration rolled out, tenants/s", figure: tenantCount / first.seconds, shown: (tenantCount / first.seconds).toFixed(1), atLeast: 100, goal: "≥ 100" },
  { measure: "the same call again, nothing pending, s", figure: again.seconds, shown: again.seconds.toFixed(2), atMost: 1, goal: "< 1" },
])}
`);
} finally {
  await bench.stop();
}
