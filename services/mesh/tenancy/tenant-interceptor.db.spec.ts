import { Code, ConnectError, createContextValues, type StreamRequest, type StreamResponse } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EntryService } from "../../../gen/tenantry/backend/v1/entry_service_pb.js";
import { Entry } from "../../backend/entities/entry.ts";
import { startSingleBackend, type SingleBackend } from "../../testing/single-service.ts";
import { entityManagerIn, kEntityManager } from "./tenant-context.ts";
import { TenantStatus } from "./tenant-directory.ts";
import { tenantInterceptor } from "./tenant-interceptor.ts";

let backend: SingleBackend;
let tenantId: string;
beforeAll(async () => {
  backend = await startSingleBackend();
  ({ tenantId } = await backend.createTenant());
  for (const title of ["one", "two", "three"]) {
    await backend.entries.createEntry({ title }, { headers: { "x-tenant-id": tenantId } });
  }
});
afterAll(() => backend?.stop());

function streamRequest(tenant: string): StreamRequest {
  return {
    stream: true,
    service: EntryService,
    // Any TENANT method will do: the interceptor reads only its access option.
    method: EntryService.method.listEntries,
    requestMethod: "POST",
    url: "http://test/",
    signal: new AbortController().signal,
    header: new Headers({ "x-tenant-id": tenant }),
    contextValues: createContextValues(),
    message: (async function* () {})(),
  } as unknown as StreamRequest;
}

/** A server-streaming handler: its body runs only when the response is iterated. */
function streamingHandler(req: StreamRequest): Promise<StreamResponse> {
  const em = entityManagerIn(req.contextValues)!;
  return Promise.resolve({
    stream: true,
    service: req.service,
    method: req.method,
    header: new Headers(),
    trailer: new Headers(),
    message: (async function* () {
      await new Promise((resolve) => setTimeout(resolve, 5));
      for (const entry of await em.find(Entry, {}, { orderBy: { title: "asc" } })) {
        yield entry.title as never;
      }
    })(),
  } as StreamResponse);
}

describe("tenant interceptor", () => {
  it("keeps a server-streaming response in the tenant's scope while it is iterated", async () => {
    const res = (await tenantInterceptor(backend.service.tenancy)(streamingHandler as never)(streamRequest(tenantId))) as StreamResponse;
    const titles: unknown[] = [];
    for await (const title of res.message) {
      titles.push(title);
    }
    expect(titles).toEqual(["one", "three", "two"]);
  });

  it("fails loudly when a query runs outside any tenant's scope", async () => {
    const req = streamRequest(tenantId);
    req.contextValues.set(kEntityManager, backend.service.tenancy.fork());
    const res = await streamingHandler(req);
    const error = await (async () => {
      for await (const _ of res.message) {
        // the first step queries outside a scope
      }
    })().then(() => undefined, (e: unknown) => e);
    expect(String(error)).toMatch(/outside a tenant scope/);
  });

  it("refuses a tenant that is not ACTIVE with FAILED_PRECONDITION", async () => {
    const { tenantId: failed } = await backend.createTenant();
    backend.changeTenant(failed, { status: TenantStatus.SUSPENDED });
    backend.service.tenancy.directory.invalidate(failed);
    const error = await tenantInterceptor(backend.service.tenancy)(streamingHandler as never)(streamRequest(failed)).then(() => undefined, (e: unknown) => e);
    expect(error).toBeInstanceOf(ConnectError);
    expect((error as ConnectError).code).toBe(Code.FailedPrecondition);
    expect((error as ConnectError).rawMessage).toMatch(/suspended/);
  });
});
