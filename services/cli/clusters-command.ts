import { create, toJson } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { Argument, Option, type Command } from "commander";
import {
  ClusterState,
  ListClustersResponseSchema,
  ListPoolDatabasesResponseSchema,
  PoolDatabaseState,
  RegisterClusterResponseSchema,
  SetPoolDatabaseStateResponseSchema,
  type Cluster,
  type PoolDatabase,
} from "../../gen/tenantry/platform/v1/cluster_service_pb.js";
import { MoveMode } from "../../gen/tenantry/platform/v1/move_pb.js";
import { DrainClusterResponseSchema, DrainEvent, DrainTotalsSchema, type DrainClusterResponse } from "../../gen/tenantry/platform/v1/move_service_pb.js";
import { DrainProgress } from "./drain-progress.ts";
import { ExitCode } from "./exit-codes.ts";
import { wholeNumber } from "./option-parsers.ts";
import { counted, enumLabel, timeLabel, type Output } from "./output.ts";
import { withPlatform } from "./platform-session.ts";
import { readSecretInput } from "./secret-input.ts";

/** Options of `clusters register`. */
interface RegisterOptions {
  host: string;
  port?: number;
  adminUser: string;
  adminPasswordStdin?: boolean;
  capacity: number;
  poolCapacity?: number;
  region?: string;
  state?: "accepting" | "draining";
}

/** Options of `clusters drain`. */
interface DrainOptions {
  concurrency?: number;
  mode?: "online" | "copy" | "auto";
  to?: string;
}

const drainModes = { online: MoveMode.ONLINE, copy: MoveMode.COPY_UNDER_FREEZE, auto: MoveMode.AUTO } as const;

const poolDatabaseStates = { ready: PoolDatabaseState.READY, draining: PoolDatabaseState.DRAINING } as const;

/** Adds `clusters list|register|drain|pools|pool-state`. */
export function addClustersCommand(program: Command): void {
  const clusters = program.command("clusters").description("the PostgreSQL servers that hold tenant databases");

  clusters
    .command("list")
    .description("list every cluster, ordered by name, with its tenant count")
    .action((_options: object, command: Command) =>
      withPlatform(command, async ({ clusters, output, call }) => {
        const response = await clusters.listClusters({}, call);
        output.result(ListClustersResponseSchema, response, () =>
          output.table(
            ["NAME", "HOST", "PORT", "REGION", "STATE", "TENANTS", "CAPACITY", "POOLED", "POOL CAPACITY", "ADMIN USER"],
            response.clusters.map((c) => [
              c.name,
              c.host,
              String(c.port),
              c.region,
              enumLabel(ClusterState, c.state),
              String(c.tenantCount),
              String(c.capacity),
              String(c.pooledTenantCount),
              String(c.poolCapacity),
              c.adminUser,
            ]),
            "no clusters",
          ),
        );
      }),
    );

  const printPools = (output: Output, pools: PoolDatabase[]) =>
    output.table(
      ["NAME", "STATE", "TENANTS"],
      pools.map((p) => [p.name, enumLabel(PoolDatabaseState, p.state), String(p.tenantCount)]),
      "no pool databases",
    );

  clusters
    .command("pools")
    .description("list a cluster's pool databases (shared by its pooled tenants), ordered by name, with their states and tenant counts")
    .argument("<cluster>", "the cluster's name")
    .action((cluster: string, _options: object, command: Command) =>
      withPlatform(command, async ({ clusters, output, call }) => {
        const response = await clusters.listPoolDatabases({ cluster }, call);
        output.result(ListPoolDatabasesResponseSchema, response, () => printPools(output, response.poolDatabases));
      }),
    );

  clusters
    .command("pool-state")
    .description("set whether a pool database takes new pooled tenants: draining (it serves its tenants, takes no new ones) or ready")
    .argument("<cluster>", "the cluster's name")
    .argument("<pool-database>", "the pool database's name (see clusters pools)")
    .addArgument(new Argument("<state>", "its new state").choices(Object.keys(poolDatabaseStates)))
    .action((cluster: string, poolDatabase: string, state: keyof typeof poolDatabaseStates, _options: object, command: Command) =>
      withPlatform(command, async ({ clusters, output, call }) => {
        const response = await clusters.setPoolDatabaseState({ cluster, poolDatabase, state: poolDatabaseStates[state] }, call);
        output.result(SetPoolDatabaseStateResponseSchema, response, () => printPools(output, response.poolDatabase === undefined ? [] : [response.poolDatabase]));
      }),
    );

  clusters
    .command("register")
    .description("register a PostgreSQL server for tenant databases, or give a registered one new settings; Platform first checks the admin role may create databases and roles")
    .argument("<name>", "1 to 40 lower-case letters, digits and hyphens, starting with a letter")
    .requiredOption("--host <host>", "the server's host")
    .option("--port <port>", "the server's port (default: 5432)", wholeNumber(1, 65535))
    .requiredOption("--admin-user <role>", "a role that may create databases and roles (a superuser, or CREATEDB and CREATEROLE)")
    .option("--admin-password-stdin", "read that role's password from standard input (else from TENANTRY_CLUSTER_ADMIN_PASSWORD)")
    .requiredOption("--capacity <n>", "how many dedicated tenants it may hold", wholeNumber(1, 2 ** 31 - 1))
    .option("--pool-capacity <n>", "how many pooled tenants it may hold (default: what it has, 20000 for a new cluster)", wholeNumber(1, 2 ** 31 - 1))
    .option("--region <region>", "a region label that tenants can be placed by")
    .addOption(new Option("--state <state>", "whether new tenants may be placed there (default: accepting)").choices(["accepting", "draining"]))
    .action(async (name: string, options: RegisterOptions, command: Command) => {
      const adminPassword = await readSecretInput({
        fromStdin: options.adminPasswordStdin === true,
        stdinOption: "--admin-password-stdin",
        envName: "TENANTRY_CLUSTER_ADMIN_PASSWORD",
        env: process.env,
      });
      if (adminPassword === undefined) {
        throw new ConnectError("the admin role's password is missing: pipe it in with --admin-password-stdin or set TENANTRY_CLUSTER_ADMIN_PASSWORD", Code.InvalidArgument);
      }
      await withPlatform(command, async ({ clusters, output, call }) => {
        const response = await clusters.registerCluster(
          {
            name,
            host: options.host,
            port: options.port ?? 0,
            adminUser: options.adminUser,
            adminPassword,
            capacity: options.capacity,
            poolCapacity: options.poolCapacity ?? 0,
            region: options.region ?? "",
            state: options.state === undefined ? ClusterState.UNSPECIFIED : options.state === "draining" ? ClusterState.DRAINING : ClusterState.ACCEPTING,
          },
          call,
        );
        output.result(RegisterClusterResponseSchema, response, () => printCluster(output, response.cluster));
      });
    });

  clusters
    .command("drain")
    .description(
      "mark a cluster draining (it takes no new tenants) and move every tenant on it to other clusters, with live progress; " +
        "safe to stop (moves under way go on) and run again (exit code 1 when some tenants were not moved)",
    )
    .argument("<name>", "the cluster to drain")
    .option("--concurrency <n>", "tenants moved at once, 1 to 16 (default: 2)", wholeNumber(1, 16))
    .addOption(new Option("--mode <mode>", "how tenants move: online (logical replication), copy (under a write freeze) or auto (online where possible; default)").choices(Object.keys(drainModes)))
    .option("--to <cluster>", "move every tenant to this cluster (default: each to the accepting cluster with the most room)")
    .action((name: string, options: DrainOptions, command: Command) =>
      withPlatform(command, async ({ moves, output, options: global }) => {
        const progress = new DrainProgress({ stream: process.stderr, live: process.stderr.isTTY === true, cluster: name });
        const stop = new AbortController();
        const interrupt = () => stop.abort();
        process.once("SIGINT", interrupt);
        let totals = create(DrainTotalsSchema);
        let finished = false;
        const notMoved: DrainClusterResponse[] = [];
        let ending: ConnectError | undefined;
        try {
          const events = moves.drainCluster(
            { cluster: name, maxConcurrency: options.concurrency ?? 0, mode: options.mode === undefined ? MoveMode.UNSPECIFIED : drainModes[options.mode], targetCluster: options.to ?? "" },
            // A drain takes as long as its moves: no deadline unless --timeout asks for one.
            { signal: stop.signal, timeoutMs: global.timeout },
          );
          for await (const event of events) {
            progress.update(event);
            totals = event.totals ?? totals;
            finished ||= event.event === DrainEvent.FINISHED;
            if (event.event === DrainEvent.MOVE_FAILED || event.event === DrainEvent.TENANT_LEFT) {
              notMoved.push(event);
            }
          }
        } catch (error) {
          if (stop.signal.aborted) {
            progress.stop();
            output.note(`interrupted after ${totals.moved} of ${totals.total} tenants moved; the moves under way go on, and \`tenantry clusters drain ${name}\` goes on from there`);
            process.exitCode = ExitCode.Interrupted;
            return;
          }
          // Once the drain has finished, its error says some tenants were not moved: listed below.
          if (!finished) {
            throw error;
          }
          ending = ConnectError.from(error);
        } finally {
          process.off("SIGINT", interrupt);
          progress.stop();
        }
        if (output.json) {
          output.value({
            cluster: name,
            totals: toJson(DrainTotalsSchema, totals, { alwaysEmitImplicit: true }),
            notMoved: notMoved.map((event) => toJson(DrainClusterResponseSchema, { ...event, totals: undefined }, { alwaysEmitImplicit: true })),
          });
        } else {
          output.line(`cluster ${name} is draining: ${counted(totals.total, "tenant")}, ${totals.moved} moved, ${totals.failed} failed, ${totals.left} left`);
          if (notMoved.length > 0) {
            output.line("");
            output.table(["TENANT", "EVENT", "MOVE", "ERROR"], notMoved.map((e) => [e.tenantId, DrainEvent[e.event]!.toLowerCase(), e.moveId, e.error]), "");
          }
        }
        if (ending !== undefined) {
          output.note(`error: ${ending.rawMessage}`);
          process.exitCode = ExitCode.Failure;
        }
      }),
    );
}

function printCluster(output: Output, cluster: Cluster | undefined): void {
  if (cluster === undefined) {
    return;
  }
  output.record([
    ["name", cluster.name],
    ["host", cluster.host],
    ["port", String(cluster.port)],
    ["admin user", cluster.adminUser],
    ["capacity", String(cluster.capacity)],
    ["pool capacity", String(cluster.poolCapacity)],
    ["region", cluster.region],
    ["state", enumLabel(ClusterState, cluster.state)],
    ["tenants", String(cluster.tenantCount)],
    ["pooled tenants", String(cluster.pooledTenantCount)],
    ["created", timeLabel(cluster.createTime)],
  ]);
}
