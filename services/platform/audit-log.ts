import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import type { MikroORM } from "@mikro-orm/postgresql";
import { kCaller, kUser, type Caller, type Logger, type TokenUser } from "../mesh/index.ts";
import type { AuditEvent } from "./entities/audit-event.ts";
import { appendAuditEvent, auditOutcomes, listAuditEvents, type NewAuditEvent } from "./stores/index.ts";

/** How an audit event names its actor: a tenant's user by their id, `user:<id>`. */
export function actorOf(caller: Caller, user?: TokenUser): string {
  if (user !== undefined) {
    return `user:${user.userId}`;
  }
  switch (caller.kind) {
    case "operator":
      return "operator";
    case "mesh":
      return `mesh:${caller.service}`;
    default:
      return "public";
  }
}

/** The actor of Platform's own work, such as resuming or purging tenants. */
export const platformActor = "platform";

/** The record of lifecycle actions: who did what to which tenant, when, and how it ended. */
export class AuditLog {
  readonly #orm: MikroORM;
  readonly #log: Logger;

  constructor(orm: MikroORM, log: Logger) {
    this.#orm = orm;
    this.#log = log;
  }

  /** Records one action. A failure to record is logged, never thrown over the action's own outcome. */
  async record(event: NewAuditEvent): Promise<void> {
    try {
      await appendAuditEvent(this.#orm.em.fork(), { ...event, ...(event.detail === undefined ? {} : { detail: storable(event.detail) }) });
    } catch (error) {
      this.#log.error({ err: error, event }, "could not write an audit event");
    }
  }

  /**
   * Runs an RPC's action and records it with the caller as actor: the
   * detail on success, the error's code and message on failure.
   */
  async audited<T>(ctx: HandlerContext, tenantId: string | undefined, detail: Record<string, unknown>, action: () => Promise<T>): Promise<T> {
    const base = { actor: actorOf(ctx.values.get(kCaller), ctx.values.get(kUser)), action: ctx.method.name, tenantId };
    try {
      const result = await action();
      await this.record({ ...base, outcome: auditOutcomes.succeeded, detail });
      return result;
    } catch (error) {
      const cause = ConnectError.from(error);
      await this.record({ ...base, outcome: auditOutcomes.failed, detail: { ...detail, code: Code[cause.code], error: cause.rawMessage } });
      throw error;
    }
  }

  /**
   * Streams a streaming RPC's events and records the call as {@link audited}
   * does once the stream ends: with the detail and what `summary` says the
   * stream came to, the error's code and message on failure, CANCELED when
   * the caller stopped reading.
   */
  async *auditedStream<T>(ctx: HandlerContext, tenantId: string | undefined, detail: Record<string, unknown>, events: AsyncIterable<T>, summary: () => Record<string, unknown>): AsyncGenerator<T> {
    const base = { actor: actorOf(ctx.values.get(kCaller), ctx.values.get(kUser)), action: ctx.method.name, tenantId };
    let failure: ConnectError | undefined = new ConnectError("the caller stopped reading the stream", Code.Canceled);
    try {
      yield* events;
      failure = undefined;
    } catch (error) {
      failure = ConnectError.from(error);
      throw error;
    } finally {
      const outcome = failure === undefined ? auditOutcomes.succeeded : auditOutcomes.failed;
      const ending = failure === undefined ? {} : { code: Code[failure.code], error: failure.rawMessage };
      await this.record({ ...base, outcome, detail: { ...detail, ...summary(), ...ending } });
    }
  }

  /** Events, newest first, optionally of one tenant, a page at a time. */
  list(request: { tenantId: string; pageSize: number; pageToken: string }): Promise<{ events: AuditEvent[]; nextPageToken: string }> {
    return listAuditEvents(this.#orm.em.fork(), request);
  }
}

/** A detail as jsonb takes it: PostgreSQL refuses NUL in text, so a NUL a request carried is recorded as U+FFFD. */
function storable(detail: Record<string, unknown>): Record<string, unknown> {
  return JSON.parse(JSON.stringify(detail, (_key, value: unknown) => (typeof value === "string" ? value.replaceAll("\u0000", "\uFFFD") : value))) as Record<string, unknown>;
}
