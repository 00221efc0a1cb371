import { Code, ConnectError } from "@connectrpc/connect";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { registry } from "../../registry.ts";
import { newService, nextFreePorts } from "./new-service.ts";

describe("a new service's ports", () => {
  it("are those after the highest registered, gRPC and HTTP apart", () => {
    const highest = { grpc: Math.max(...registry.map((s) => s.grpcPort)), http: Math.max(...registry.map((s) => s.httpPort)) };
    expect(nextFreePorts(registry)).toEqual({ grpcPort: highest.grpc + 1, httpPort: highest.http + 1 });
  });

  it("step over a port a service holds, the new gRPC port included", () => {
    const services = [
      { grpcPort: 50051, httpPort: 8081 },
      { grpcPort: 8082, httpPort: 50052 },
    ];
    expect(nextFreePorts(services)).toEqual({ grpcPort: 50053, httpPort: 50054 });
  });
});

describe("new-service outside a checkout", () => {
  it("refuses with FAILED_PRECONDITION, naming what is missing, and writes nothing", async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "tenantry-not-a-checkout-"));
    try {
      const refused = await newService({ root: dir, name: "billing", entity: "item" }).catch((e: unknown) => ConnectError.from(e));
      expect((refused as ConnectError).code).toBe(Code.FailedPrecondition);
      expect((refused as ConnectError).rawMessage).toMatch(/is not a Tenantry checkout with its packages installed \(services\/registry.ts is missing\)/);
      expect(await readdir(dir)).toEqual([]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
