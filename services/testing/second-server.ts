import type { MessageInitShape } from "@bufbuild/protobuf";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { ClusterState, type RegisterClusterRequestSchema } from "../../gen/tenantry/platform/v1/cluster_service_pb.js";
import { startEmbeddedDatabase, type EmbeddedDatabase } from "../mesh/index.ts";
import { freePort } from "./free-port.ts";
import { TestServer } from "./test-server.ts";

/** A PostgreSQL server of a spec's own, besides the tests' shared one: another cluster to place or move tenants on. */
export interface SecondServer {
  database: EmbeddedDatabase;
  /** Runs SQL as the superuser in a database of this server. */
  sql: TestServer["sql"];
  /** What ClusterService.RegisterCluster takes to register this server as cluster `name` (accepting, capacity 100, by default). */
  registration(name: string, settings?: Partial<MessageInitShape<typeof RegisterClusterRequestSchema>>): MessageInitShape<typeof RegisterClusterRequestSchema>;
  stop(): Promise<void>;
}

/**
 * Starts one more embedded PostgreSQL server, in a temporary directory on a
 * free port, as the tests' shared one is started (logical decoding on, so
 * tenants can be moved to and from it online). Stop it in `afterAll`.
 */
export async function startSecondServer(): Promise<SecondServer> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "tenantry-second-"));
  let database: EmbeddedDatabase;
  try {
    database = await startEmbeddedDatabase({ dir, port: await freePort(), ephemeral: true });
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
  const server = new TestServer(database.url);
  const password = decodeURIComponent(new URL(database.url).password);
  return {
    database,
    sql: server.sql.bind(server),
    registration: (name, settings = {}) => ({
      name,
      host: "127.0.0.1",
      port: database.port,
      adminUser: "postgres",
      adminPassword: password,
      capacity: 100,
      poolCapacity: 0,
      region: "local",
      state: ClusterState.ACCEPTING,
      ...settings,
    }),
    async stop() {
      await server.close();
      await database.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
