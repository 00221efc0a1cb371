import { create, createFileRegistry, setExtension, type DescService, type MessageInitShape } from "@bufbuild/protobuf";
import { file_google_protobuf_empty, FileDescriptorProtoSchema, MethodOptionsSchema, ServiceOptionsSchema, type MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import { access, AccessKind, AccessSchema, file_tenantry_options_v1_access, permissions, PermissionSchema } from "../../gen/tenantry/options/v1/access_pb.js";

/** An RPC service for specs, as its `.proto` file would declare it. */
export interface TestContract {
  /** The service's full name, such as "tenantry.ledger.v1.LedgerService". */
  typeName: string;
  /** The permissions it declares (its `tenantry.options.v1.permissions` options). */
  permissions: MessageInitShape<typeof PermissionSchema>[];
  /** Its methods by name, each a TENANT method needing the permission given; each takes and returns google.protobuf.Empty. */
  methods: Record<string, string>;
  /** The `idempotency_level` some of its methods declare, by name; the others declare none. */
  idempotency?: Record<string, MethodOptions_IdempotencyLevel>;
}

/**
 * Builds the descriptor of an RPC service that exists only in a spec, as
 * `buf generate` would from its `.proto` file, with its access and
 * permissions options: a service of a kind no contract in proto/ has (a new
 * data-owning service, a mistaken declaration) can then be served and checked.
 */
export function testContract(contract: TestContract): DescService {
  const parts = contract.typeName.split(".");
  const name = parts.pop()!;
  const packageName = parts.join(".");
  const serviceOptions = create(ServiceOptionsSchema);
  setExtension(serviceOptions, permissions, contract.permissions.map((p) => create(PermissionSchema, p)));
  const file = create(FileDescriptorProtoSchema, {
    name: `${parts.join("/")}/${name}.proto`,
    package: packageName,
    syntax: "proto3",
    dependency: [file_google_protobuf_empty.proto.name, file_tenantry_options_v1_access.proto.name],
    service: [
      {
        name,
        options: serviceOptions,
        method: Object.entries(contract.methods).map(([method, permission]) => {
          const options = create(MethodOptionsSchema);
          setExtension(options, access, create(AccessSchema, { kind: AccessKind.TENANT, permission }));
          const level = contract.idempotency?.[method];
          if (level !== undefined) {
            options.idempotencyLevel = level;
          }
          return { name: method, inputType: ".google.protobuf.Empty", outputType: ".google.protobuf.Empty", options };
        }),
      },
    ],
  });
  const dependencies = [file_google_protobuf_empty, file_tenantry_options_v1_access];
  return createFileRegistry(file, (fileName) => dependencies.find((d) => d.proto.name === fileName)).getService(contract.typeName)!;
}
