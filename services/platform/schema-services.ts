import type { DescService } from "@bufbuild/protobuf";
import { ConnectError, createClient, type Client } from "@connectrpc/connect";
import { TenantSchemaService } from "../../gen/tenantry/schema/v1/tenant_schema_service_pb.js";
import { createGrpcJsTransport, type GrpcJsTransport, type MeshCredentials } from "../mesh/index.ts";
import type { SchemaServiceRecord } from "./stores/index.ts";

/** A data-owning service as the registry knows it. */
export interface SchemaServiceEntry {
  name: string;
  address: string;
  client: Client<typeof TenantSchemaService>;
  /** A client of another RPC service of the same process. */
  clientOf<S extends DescService>(service: S): Client<S>;
}

/**
 * The services that own a schema in every tenant database: their clients,
 * and the newest migration each knows (asked with DescribeSchema and kept
 * for a few seconds, so provisioning does not ask on every tenant).
 */
export class SchemaServices {
  readonly entries: SchemaServiceEntry[];
  readonly #transports: GrpcJsTransport[] = [];
  readonly #ttlMs: number;
  #latest: { at: number; versions: Promise<Map<string, string>> } | undefined;

  readonly #record: ((service: SchemaServiceRecord) => Promise<void>) | undefined;

  constructor(options: {
    addresses: Map<string, string>;
    credentials: MeshCredentials;
    ttlMs?: number;
    /** Keeps what a service said about itself (Platform's registry of services). */
    record?: (service: SchemaServiceRecord) => Promise<void>;
  }) {
    this.#ttlMs = options.ttlMs ?? 5000;
    this.#record = options.record;
    this.entries = [...options.addresses].map(([name, address]) => {
      const transport = createGrpcJsTransport({ address, interceptors: [options.credentials.clientInterceptor()] });
      this.#transports.push(transport);
      return { name, address, client: createClient(TenantSchemaService, transport), clientOf: (service) => createClient(service, transport) };
    });
  }

  /**
   * The newest migration of every service, by service name, as answered in
   * the last few seconds unless `fresh`. Rejects with the service's error
   * when one cannot be asked.
   */
  latestVersions(options: { fresh?: boolean } = {}): Promise<Map<string, string>> {
    const now = Date.now();
    if (this.#latest === undefined || now - this.#latest.at > this.#ttlMs || options.fresh) {
      const versions = Promise.all(
        this.entries.map(async ({ name, address, client }) => {
          try {
            const described = await client.describeSchema({}, { timeoutMs: 5000 });
            await this.#record?.({ name, address, latestVersion: described.latestVersion, migrations: described.migrations });
            return [name, described.latestVersion] as const;
          } catch (error) {
            const cause = ConnectError.from(error);
            throw new ConnectError(`${name} cannot be asked for its schema: ${cause.rawMessage}`, cause.code);
          }
        }),
      ).then((pairs) => new Map(pairs));
      const entry = { at: now, versions };
      this.#latest = entry;
      versions.catch(() => {
        if (this.#latest === entry) {
          this.#latest = undefined;
        }
      });
    }
    return this.#latest.versions;
  }

  /** Closes the clients' channels. */
  close(): void {
    this.#transports.forEach((t) => t.close());
  }
}
