import { createClient, type CallOptions, type Client } from "@connectrpc/connect";
import type { Command } from "commander";
import { BackupService } from "../../gen/tenantry/platform/v1/backup_service_pb.js";
import { ClusterService } from "../../gen/tenantry/platform/v1/cluster_service_pb.js";
import { FleetService } from "../../gen/tenantry/platform/v1/fleet_service_pb.js";
import { MoveService } from "../../gen/tenantry/platform/v1/move_service_pb.js";
import { PlatformService } from "../../gen/tenantry/platform/v1/platform_service_pb.js";
import { createGrpcJsTransport, operatorCredentialInterceptor } from "../mesh/index.ts";
import { readOperatorToken } from "./operator-token.ts";
import { Output } from "./output.ts";

/** The program's own options, which every command takes. */
export interface GlobalOptions {
  /** `host:port` of Platform's gRPC listener. */
  platform: string;
  /** Machine-readable output. */
  json?: boolean;
  /** Deadline of each call in milliseconds, when --timeout was given. */
  timeout?: number;
}

/** Unary calls get this deadline when --timeout is not given: creating a tenant takes seconds, not minutes. */
const defaultTimeoutMs = 60_000;

/** What a command needs to call Platform and print the answer. */
export interface PlatformSession {
  platform: Client<typeof PlatformService>;
  clusters: Client<typeof ClusterService>;
  fleet: Client<typeof FleetService>;
  backups: Client<typeof BackupService>;
  moves: Client<typeof MoveService>;
  output: Output;
  /** Options for unary calls: the --timeout deadline, or one minute. */
  call: CallOptions;
  /** Options for calls that last as long as their work (backups, restores, moves): the --timeout deadline, or none. */
  longCall: CallOptions;
  options: GlobalOptions;
}

/**
 * Runs a command's work with clients for Platform's operator services,
 * authenticated with the operator token, and closes the connection after
 * it, so that the process exits as soon as the work is done.
 */
export async function withPlatform(command: Command, work: (session: PlatformSession) => Promise<void>): Promise<void> {
  const options = command.optsWithGlobals<GlobalOptions>();
  const token = await readOperatorToken(process.env);
  const transport = createGrpcJsTransport({ address: options.platform, interceptors: [operatorCredentialInterceptor(token)] });
  try {
    await work({
      platform: createClient(PlatformService, transport),
      clusters: createClient(ClusterService, transport),
      fleet: createClient(FleetService, transport),
      backups: createClient(BackupService, transport),
      moves: createClient(MoveService, transport),
      output: new Output({ json: options.json === true }),
      call: { timeoutMs: options.timeout ?? defaultTimeoutMs },
      longCall: { timeoutMs: options.timeout },
      options,
    });
  } finally {
    transport.close();
  }
}
