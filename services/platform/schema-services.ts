import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createContextValues, type Client } from "@connectrpc/connect";
import { TenantSchemaService } from "../../gen/tenantry/schema/v1/tenant_schema_service_pb.js";
import { createGrpcJsTransport, waitForReadyKey, type GrpcJsTransport, type MeshCredentials } from "../mesh/index.ts";
import { meshCatalogOf, type PermissionCatalog } from "./permission-catalog.ts";
import type { CatalogMark, SchemaDescription, SchemaServiceRecord } from "./stores/index.ts";

/**
 * The schema service that keeps tenants' users, roles and permission
 * catalogs: Platform bootstraps tenants with it, and hands it the catalog
 * every service declares.
 */
export const authService = "auth";

/** A data-owning service as the registry knows it. */
export interface SchemaServiceEntry {
  name: string;
  address: string;
  client: Client<typeof TenantSchemaService>;
  /** A client of another RPC service of the same process. */
  clientOf<S extends DescService>(service: S): Client<S>;
}

/** How long a service is waited for to answer DescribeSchema, reachable or not yet. */
const describeTimeoutMs = 5000;

/**
 * The services that own a schema in every tenant database: their clients,
 * and what each says of itself, its newest migration and the permissions it
 * declares (asked with DescribeSchema and kept for a few seconds, so
 * provisioning does not ask on every tenant).
 */
export class SchemaServices {
  readonly entries: SchemaServiceEntry[];
  readonly #transports: GrpcJsTransport[] = [];
  readonly #ttlMs: number;
  #described: { at: number; descriptions: Promise<Map<string, SchemaDescription>> } | undefined;
  /** The newest versions last asked afresh, with the connections they were answered on (see {@link connectedVersions}). */
  #connected: { at: number; connections: number[]; latest: Map<string, string> } | undefined;

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

  /** The entry of Auth ({@link authService}), when it is one of the services. */
  get auth(): SchemaServiceEntry | undefined {
    return this.entries.find((e) => e.name === authService);
  }

  /**
   * What every service says of itself, by service name, as answered in the
   * last few seconds unless `fresh`. Rejects with the service's error when
   * one cannot be asked.
   */
  describe(options: { fresh?: boolean } = {}): Promise<Map<string, SchemaDescription>> {
    const now = Date.now();
    if (this.#described === undefined || now - this.#described.at > this.#ttlMs || options.fresh) {
      const descriptions = Promise.all(
        this.entries.map(async ({ name, address, client }) => {
          try {
            // Waits for a service not reachable yet (just started, or this channel still backing off
            // from attempts made before it was up) rather than failing at once.
            const { latestVersion, migrations, permissions } = await client.describeSchema(
              {},
              { timeoutMs: describeTimeoutMs, contextValues: createContextValues().set(waitForReadyKey, true) },
            );
            await this.#record?.({ name, address, latestVersion, migrations, permissions });
            return [name, { latestVersion, permissions }] as const;
          } catch (error) {
            const cause = ConnectError.from(error);
            if (cause.code === Code.DeadlineExceeded) {
              throw new ConnectError(`${name} cannot be asked for its schema: it did not answer within ${describeTimeoutMs / 1000} s at ${address}`, Code.Unavailable);
            }
            throw new ConnectError(`${name} cannot be asked for its schema: ${cause.rawMessage}`, cause.code);
          }
        }),
      ).then((pairs) => new Map(pairs));
      const entry = { at: now, descriptions };
      this.#described = entry;
      descriptions.catch(() => {
        if (this.#described === entry) {
          this.#described = undefined;
        }
      });
    }
    return this.#described.descriptions;
  }

  /** The newest migration of every service, by service name (see {@link describe}). */
  async latestVersions(options: { fresh?: boolean } = {}): Promise<Map<string, string>> {
    return latestVersionsOf(await this.describe(options));
  }

  /**
   * The newest migration of every service, as the services on the
   * connections open now answer: what they answered when last asked
   * afresh, if every service has been on that same connection since and
   * for at most the few seconds {@link describe} keeps an answer, else
   * asked afresh. A service deployed with new migrations is a new process,
   * on a new connection: it is asked again, never answered for by the one
   * it replaced.
   */
  async connectedVersions(): Promise<Map<string, string>> {
    const kept = this.#connected;
    if (kept !== undefined && Date.now() - kept.at <= this.#ttlMs && sameConnections(kept.connections, this.#connections())) {
      return kept.latest;
    }
    const at = Date.now();
    const before = this.#connections();
    const latest = await this.latestVersions({ fresh: true });
    // Kept only when every answer came over a connection that was open before asking and still is.
    if (before.every((c) => c !== undefined) && sameConnections(before, this.#connections())) {
      this.#connected = { at, connections: before, latest };
    }
    return latest;
  }

  /** Which connection each service's channel holds now (see GrpcJsTransport.connection). */
  #connections(): (number | undefined)[] {
    return this.#transports.map((t) => t.connection());
  }

  /** The permissions every service declares, Platform included (see {@link describe}). */
  async permissionCatalog(options: { fresh?: boolean } = {}): Promise<PermissionCatalog> {
    return meshCatalogOf((await this.describe(options)).values());
  }

  /** Closes the clients' channels. */
  close(): void {
    this.#transports.forEach((t) => t.close());
  }
}

/** Whether two lists of connections name the same open ones. */
function sameConnections(kept: readonly (number | undefined)[], now: readonly (number | undefined)[]): boolean {
  return kept.length === now.length && kept.every((c, i) => c !== undefined && c === now[i]);
}

/** Each service's newest migration, by service name. */
export function latestVersionsOf(descriptions: Map<string, SchemaDescription>): Map<string, string> {
  return new Map([...descriptions].map(([name, d]) => [name, d.latestVersion]));
}

/** What the ledger's Auth entries hold when their catalog is current, from what the services describe; undefined without Auth. */
export function catalogMarkOf(descriptions: Map<string, SchemaDescription>): CatalogMark | undefined {
  if (!descriptions.has(authService)) {
    return undefined;
  }
  return { service: authService, digest: meshCatalogOf(descriptions.values()).digest };
}
