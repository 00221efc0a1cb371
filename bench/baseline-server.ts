// The baseline of the GetEntry benchmark: a bare @grpc/grpc-js server that
// answers GetEntry with the same SQL through one pg Pool on one database.
// No interceptors, no tenant routing, no ORM.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import pg from "pg";
import { EntrySchema, EntryService, GetEntryResponseSchema } from "../gen/tenantry/backend/v1/entry_service_pb.js";

const method = EntryService.method.getEntry;
const pool = new pg.Pool({
  connectionString: process.env.BASELINE_DATABASE_URL,
  max: Number(process.env.BASELINE_POOL_MAX ?? 20),
  idleTimeoutMillis: Number(process.env.BASELINE_IDLE_TIMEOUT_MS ?? 10_000),
});
const server = new grpc.Server();
server.addService(
  {
    GetEntry: {
      path: `/${EntryService.typeName}/GetEntry`,
      requestStream: false,
      responseStream: false,
      requestSerialize: (m: unknown) => Buffer.from(toBinary(method.input, m as never)),
      requestDeserialize: (b: Buffer) => fromBinary(method.input, b),
      responseSerialize: (m: unknown) => Buffer.from(toBinary(method.output, m as never)),
      responseDeserialize: (b: Buffer) => fromBinary(method.output, b),
    },
  },
  {
    GetEntry: (call: grpc.ServerUnaryCall<{ id: string }, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      pool
        .query(
          "select e0.id, e0.title, e0.body, e0.tags, e0.version, e0.created_at, e0.updated_at from backend.entries as e0 where e0.id = $1 limit 1",
          [call.request.id],
        )
        .then(({ rows: [row] }) => {
          if (row === undefined) {
            callback({ code: grpc.status.NOT_FOUND, details: "entry not found" });
            return;
          }
          callback(
            null,
            create(GetEntryResponseSchema, {
              entry: create(EntrySchema, {
                id: row.id,
                title: row.title,
                body: row.body,
                tags: row.tags,
                etag: String(row.version),
                createTime: timestampFromDate(row.created_at),
                updateTime: timestampFromDate(row.updated_at),
              }),
            }),
          );
        }, (error: Error) => callback({ code: grpc.status.INTERNAL, details: error.message }));
    },
  },
);
server.bindAsync(`127.0.0.1:${process.env.BASELINE_PORT}`, grpc.ServerCredentials.createInsecure(), (error) => {
  if (error) {
    throw error;
  }
  process.stdout.write("ready\n");
});
process.once("SIGTERM", () => server.tryShutdown(() => void pool.end().then(() => process.exit(0))));
