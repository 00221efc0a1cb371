import { clone, create as createMessage, fromBinary, ScalarType, toBinary, type DescField, type DescMessage, type Message } from "@bufbuild/protobuf";
import { reflect } from "@bufbuild/protobuf/reflect";
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { Migration } from "@mikro-orm/migrations";
import type { EntityManager, MigrationObject } from "@mikro-orm/postgresql";
import { createHmac } from "node:crypto";
import { isUuid } from "../wire/uuid.ts";
import { entityManagerOf } from "./tenant-context.ts";

/** Options of a {@link RequestLedger}. */
export interface RequestLedgerOptions {
  /**
   * Keys the requests' fingerprints (HMAC-SHA256). The database never holds
   * it, so whoever has only the database cannot test guesses of a request's
   * fields (a password, say) against a stored fingerprint.
   */
  key: Uint8Array;
}

/** How long a tenant's request ids are remembered at least. */
const retention = "24 hours";

/** Expired ids a create removes at most, so that purging never costs a call more than a short index scan. */
const purgeBatch = 16;

/**
 * Makes creates safe to retry (AIP-155). A create method whose request has a
 * `string request_id` field runs through {@link RequestLedger.createOnce}:
 * the first call with an id stores the id, a keyed fingerprint of the
 * request and the response in the service's `request_ids` table, in the same
 * transaction as what it creates, so neither commits without the other. A
 * repeat with the same id and request returns the stored response and
 * creates nothing; one with the same id and another request is
 * ALREADY_EXISTS. A repeat arriving while the first call still runs waits
 * for it on the table's primary key. A create that fails leaves no id
 * behind, so the id can be sent again with a corrected request.
 *
 * Ids are kept per tenant (in its own schema) for at least 24 hours: each
 * create with an id removes a few expired ones, oldest first, through an
 * index on their time, so purging costs no call a scan and needs no timer.
 * Another key makes every known id's repeats ALREADY_EXISTS.
 */
export class RequestLedger {
  /** Unqualified: the connection's search_path is the tenant's schema of the service. */
  readonly #table = "request_ids";
  readonly #key: Uint8Array;

  constructor(options: RequestLedgerOptions) {
    this.#key = options.key;
  }

  /**
   * Runs `create` for the call's request once per request id: with an empty
   * `request_id` it simply runs; with one, it runs in a transaction that also
   * records the id, or not at all when the id is known, returning the first
   * response. `create` must use the EntityManager it is given and return the
   * method's response.
   */
  async createOnce<R extends Record<string, unknown>>(ctx: HandlerContext, request: Message, create: (em: EntityManager) => Promise<R>): Promise<R> {
    const em = entityManagerOf(ctx);
    const { input, output } = ctx.method;
    const field = requestIdField(input);
    const requestId = reflect(input, request).get(field) as string;
    if (requestId === "") {
      return create(em);
    }
    if (!isUuid(requestId)) {
      throw new ConnectError(
        `malformed request_id ${JSON.stringify(requestId.slice(0, 60))}: use a UUID, the same for every attempt of one request, or leave it empty`,
        Code.InvalidArgument,
      );
    }
    const method = `${ctx.service.typeName}/${ctx.method.name}`;
    const fingerprint = this.#fingerprint(method, input, request, field);
    return em.transactional(async (tx) => {
      await tx.execute(
        `delete from ${this.#table} where request_id in (
           select request_id from ${this.#table} where created_at < now() - interval '${retention}'
           order by created_at limit ${purgeBatch} for update skip locked)`,
      );
      // A fresh id comes back with no response yet. A known one is locked and
      // returned as it is; if its first call is still running, this waits for
      // it to commit (or to roll back, and then inserts).
      const [recorded] = await tx.execute<{ method: string; fingerprint: Buffer; response: Buffer | null }[]>(
        `insert into ${this.#table} as r (request_id, method, fingerprint) values (?, ?, ?)
         on conflict (request_id) do update set method = r.method
         returning r.method, r.fingerprint, r.response`,
        [requestId.toLowerCase(), method, fingerprint],
      );
      const first = recorded!;
      if (first.response !== null) {
        if (first.method !== method || !first.fingerprint.equals(fingerprint)) {
          throw new ConnectError(
            `request_id "${requestId}" was used before for a different request: repeat a request unchanged, and give a new request a new request_id`,
            Code.AlreadyExists,
          );
        }
        // The handler's type says `create` returns this method's response, as this is.
        return fromBinary(output, first.response) as unknown as R;
      }
      const response = await create(tx);
      // Stored as the client receives it, so that a repeat gets exactly the same.
      const bytes = toBinary(output, createMessage(output, response));
      await tx.execute(`update ${this.#table} set response = ? where request_id = ?`, [Buffer.from(bytes), requestId.toLowerCase()]);
      return response;
    });
  }

  /** HMAC of the method and the request without its request_id, in protobuf's binary form. */
  #fingerprint(method: string, schema: DescMessage, request: Message, field: DescField): Buffer {
    const bare = reflect(schema, clone(schema, request));
    bare.clear(field);
    return createHmac("sha256", this.#key).update(method).update("\n").update(toBinary(schema, bare.message)).digest();
  }
}

function requestIdField(schema: DescMessage): DescField {
  const field = schema.fields.find((f) => f.name === "request_id");
  if (field === undefined || field.fieldKind !== "scalar" || field.scalar !== ScalarType.STRING) {
    throw new Error(`${schema.typeName} has no string field request_id: only such requests can be created once`);
  }
  return field;
}

/**
 * The migration that creates a service's `request_ids` table in the schema
 * being migrated (the migrator's search_path), for {@link RequestLedger}.
 * Each service lists it among its own migrations, under a name of its own.
 * Its SQL never changes once released: a later change to the table is
 * another migration. The one exception so far: when schemas became
 * per-tenant (a prefix before the service's name, for pooled tenants),
 * released migrations lost their schema qualifier (`backend.request_ids`
 * became `request_ids`) and their `create schema`. Their effect on a
 * dedicated database is the same, since they run with the search_path set
 * to the service's schema, and tenants that ran them never run them again.
 */
export function requestLedgerMigration(): MigrationObject["class"] {
  const table = "request_ids";
  return class RememberRequestIds extends Migration {
    override up(): void {
      this.addSql(`create table ${table} (
        request_id uuid primary key,
        method text not null,
        fingerprint bytea not null,
        response bytea,
        created_at timestamptz not null default now()
      )`);
      this.addSql(`create index request_ids_created_at_idx on ${table} (created_at)`);
      this.addSql(`comment on table ${table} is 'Request ids of creates (AIP-155), each with its request''s keyed fingerprint and the first response'`);
      this.addSql(`comment on column ${table}.response is 'Null only inside the transaction of the first call'`);
    }
  };
}
