import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import type { MikroORM } from "@mikro-orm/postgresql";
import { kCaller, pageOf, readPage, type Caller, type Logger } from "../mesh/index.ts";
import { AuditEvent } from "./entities/audit-event.ts";

/** How an audit event names its actor. */
export function actorOf(caller: Caller): string {
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
  async record(event: { actor: string; action: string; tenantId?: string | undefined; outcome: "succeeded" | "failed"; detail?: Record<string, unknown> }): Promise<void> {
    try {
      const em = this.#orm.em.fork();
      em.create(AuditEvent, {
        occurredAt: new Date(),
        actor: event.actor,
        action: event.action,
        tenantId: event.tenantId ?? null,
        outcome: event.outcome,
        detail: event.detail ?? {},
      });
      await em.flush();
    } catch (error) {
      this.#log.error({ err: error, event }, "could not write an audit event");
    }
  }

  /**
   * Runs an RPC's action and records it with the caller as actor: the
   * detail on success, the error's code and message on failure.
   */
  async audited<T>(ctx: HandlerContext, tenantId: string | undefined, detail: Record<string, unknown>, action: () => Promise<T>): Promise<T> {
    const base = { actor: actorOf(ctx.values.get(kCaller)), action: ctx.method.name, tenantId };
    try {
      const result = await action();
      await this.record({ ...base, outcome: "succeeded", detail });
      return result;
    } catch (error) {
      const cause = ConnectError.from(error);
      await this.record({ ...base, outcome: "failed", detail: { ...detail, code: Code[cause.code], error: cause.rawMessage } });
      throw error;
    }
  }

  /** Events, newest first, optionally of one tenant, a page at a time. */
  async list(request: { tenantId: string; pageSize: number; pageToken: string }): Promise<{ events: AuditEvent[]; nextPageToken: string }> {
    // A page ends at an event id.
    const { size, after: before } = readPage(request, (value): value is number => Number.isSafeInteger(value) && (value as number) > 0);
    const where = {
      ...(request.tenantId === "" ? {} : { tenantId: request.tenantId }),
      ...(before === undefined ? {} : { id: { $lt: before } }),
    };
    const rows = await this.#orm.em.fork().find(AuditEvent, where, { orderBy: { id: "desc" }, limit: size + 1 });
    const page = pageOf(rows, size, (last) => last.id);
    return { events: page.items, nextPageToken: page.nextPageToken };
  }
}
