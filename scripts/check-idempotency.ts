// The reads and writes of the contracts, checked by `npm run check`:
// - every method of a Tenantry RPC service (package tenantry.*) sets the
//   standard option idempotency_level: NO_SIDE_EFFECTS for a read,
//   IDEMPOTENT for a write whose repeat has the effect of one call, and
//   IDEMPOTENCY_UNKNOWN, written out, for any other write. The mesh holds
//   every call that is not NO_SIDE_EFFECTS while its tenant's writes are
//   frozen, and Connect clients may send NO_SIDE_EFFECTS calls as HTTP GET;
// - a level once declared never changes (against a git ref, with
//   --against): buf breaking's RPC_SAME_IDEMPOTENCY_LEVEL, which also
//   refuses a first declaration, is left out in buf.yaml for this rule.
import { createFileRegistry, fromBinary, isFieldSet, type DescService } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema, MethodOptions_IdempotencyLevel, MethodOptionsSchema } from "@bufbuild/protobuf/wkt";
import { execFileSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { contractServices } from "./contract-services.ts";

const levelNames: Record<MethodOptions_IdempotencyLevel, string> = {
  [MethodOptions_IdempotencyLevel.IDEMPOTENCY_UNKNOWN]: "IDEMPOTENCY_UNKNOWN",
  [MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS]: "NO_SIDE_EFFECTS",
  [MethodOptions_IdempotencyLevel.IDEMPOTENT]: "IDEMPOTENT",
};

/** Each method of the Tenantry services among `services` by its full name ("pkg.Service/Method"), with its declared level, or undefined when it declares none. */
export function declaredLevels(services: readonly DescService[]): Map<string, MethodOptions_IdempotencyLevel | undefined> {
  const levels = new Map<string, MethodOptions_IdempotencyLevel | undefined>();
  for (const service of services.filter((s) => s.typeName.startsWith("tenantry."))) {
    for (const method of service.methods) {
      const options = method.proto.options;
      const declared = options !== undefined && isFieldSet(options, MethodOptionsSchema.field.idempotencyLevel);
      levels.set(`${service.typeName}/${method.name}`, declared ? options.idempotencyLevel : undefined);
    }
  }
  return levels;
}

/**
 * Checks the rules (see the head of this file) over `services`, and over
 * the change from `before` (the contracts at the ref compared against) when
 * given. Returns one message per broken rule; none when all hold.
 */
export function checkIdempotency(services: readonly DescService[], before?: readonly DescService[]): string[] {
  const problems: string[] = [];
  const levels = declaredLevels(services);
  for (const [method, level] of levels) {
    if (level === undefined) {
      problems.push(
        `${method} does not declare whether it writes: set option idempotency_level = NO_SIDE_EFFECTS for a read, IDEMPOTENT for a write whose repeat has the effect of one call, IDEMPOTENCY_UNKNOWN (written out) for any other write`,
      );
    }
  }
  for (const [method, was] of before === undefined ? [] : declaredLevels(before)) {
    const now = levels.get(method);
    if (was !== undefined && now !== undefined && now !== was) {
      problems.push(
        `${method} changed its idempotency_level from ${levelNames[was]} to ${levelNames[now]}: clients and proxies rely on a released level (retries, HTTP GET, write freezes); add a method instead`,
      );
    }
  }
  return problems;
}

/** The RPC services of the contracts at a git ref, built by buf from proto/ as it was there. */
export function servicesAtRef(ref: string): DescService[] {
  const image = execFileSync("buf", ["build", `.git#ref=${ref}`, "-o", "-#format=binpb"], { maxBuffer: 256 * 1024 * 1024 });
  const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, image));
  return [...registry].filter((d) => d.kind === "service");
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { against: { type: "string" } } });
  const problems = checkIdempotency(await contractServices(), values.against === undefined ? undefined : servicesAtRef(values.against));
  if (problems.length > 0) {
    process.stderr.write(`${problems.join("\n")}\n${problems.length} idempotency rule(s) broken (see scripts/check-idempotency.ts)\n`);
    process.exit(1);
  }
}
