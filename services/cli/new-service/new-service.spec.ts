import { describe, expect, it } from "vitest";
import { registry } from "../../registry.ts";
import { nextFreePorts } from "./new-service.ts";

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
