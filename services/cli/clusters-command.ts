import { Code, ConnectError } from "@connectrpc/connect";
import { Option, type Command } from "commander";
import { ClusterState, ListClustersResponseSchema, RegisterClusterResponseSchema, type Cluster } from "../../gen/tenantry/platform/v1/cluster_service_pb.js";
import { wholeNumber } from "./option-parsers.ts";
import { enumLabel, timeLabel, type Output } from "./output.ts";
import { withPlatform } from "./platform-session.ts";
import { readSecretInput } from "./secret-input.ts";

/** Options of `clusters register`. */
interface RegisterOptions {
  host: string;
  port?: number;
  adminUser: string;
  adminPasswordStdin?: boolean;
  capacity: number;
  region?: string;
  state?: "accepting" | "draining";
}

/** Adds `clusters list|register`. */
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
            ["NAME", "HOST", "PORT", "REGION", "STATE", "TENANTS", "CAPACITY", "ADMIN USER"],
            response.clusters.map((c) => [c.name, c.host, String(c.port), c.region, enumLabel(ClusterState, c.state), String(c.tenantCount), String(c.capacity), c.adminUser]),
            "no clusters",
          ),
        );
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
    .requiredOption("--capacity <n>", "how many tenants it may hold", wholeNumber(1, 2 ** 31 - 1))
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
            region: options.region ?? "",
            state: options.state === undefined ? ClusterState.UNSPECIFIED : options.state === "draining" ? ClusterState.DRAINING : ClusterState.ACCEPTING,
          },
          call,
        );
        output.result(RegisterClusterResponseSchema, response, () => printCluster(output, response.cluster));
      });
    });
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
    ["region", cluster.region],
    ["state", enumLabel(ClusterState, cluster.state)],
    ["tenants", String(cluster.tenantCount)],
    ["created", timeLabel(cluster.createTime)],
  ]);
}
