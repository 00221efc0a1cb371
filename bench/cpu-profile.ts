// Reads a V8 CPU profile (node --cpu-prof) and says where the CPU went while
// the benchmark measured: self time by package and by function.
import { readFile } from "node:fs/promises";

interface Profile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
}

/** A window of the monotonic clock, in µs (`process.hrtime`), the one the profile's times are in. */
export type Window = [from: number, to: number];

/** The monotonic clock now, in µs. */
export function nowUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

/** Where a profiled function belongs: its npm package, a part of Tenantry, or Node itself. */
function ownerOf(url: string, functionName: string, root: string): string {
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)?.[1];
  if (pkg !== undefined) {
    return pkg;
  }
  if (url === "" || url.startsWith("node:")) {
    // Native work (socket writes, garbage collection, idle) is named by its function.
    return url === "" && functionName.startsWith("(") ? functionName : url === "" ? `(native ${functionName})` : "node (JavaScript)";
  }
  const own = /\/(services\/[^/]+(?:\/[^/.]+(?=\/))?|gen|bench)\//.exec(url.replace(root, ""))?.[1];
  return own === undefined ? url : `tenantry ${own}`;
}

/**
 * Self time by owner (package) and by function, as shares of the samples
 * taken inside `windows` that were not idle.
 */
export async function summarizeProfile(file: string, windows: Window[], root: string, top = { packages: 15, functions: 25 }): Promise<string> {
  const profile = JSON.parse(await readFile(file, "utf8")) as Profile;
  const hits = new Map<number, number>();
  let at = profile.startTime;
  profile.samples.forEach((id, i) => {
    at += profile.timeDeltas[i]!;
    if (windows.some(([from, to]) => at >= from && at <= to)) {
      hits.set(id, (hits.get(id) ?? 0) + 1);
    }
  });
  const byOwner = new Map<string, number>();
  const byFunction = new Map<string, number>();
  let idle = 0;
  let busy = 0;
  for (const node of profile.nodes) {
    const count = hits.get(node.id) ?? 0;
    const { functionName, url, lineNumber } = node.callFrame;
    if (count === 0) {
      continue;
    }
    if (functionName === "(idle)") {
      idle += count;
      continue;
    }
    busy += count;
    const owner = ownerOf(url, functionName, root);
    byOwner.set(owner, (byOwner.get(owner) ?? 0) + count);
    const fn = `${functionName || "(anonymous)"} ${url.replace(/.*node_modules\//, "").replace(`file://${root}/`, "")}${url === "" ? "" : `:${lineNumber + 1}`}`;
    byFunction.set(fn, (byFunction.get(fn) ?? 0) + count);
  }
  const list = (map: Map<string, number>, n: number) =>
    [...map]
      .sort((x, y) => y[1] - x[1])
      .slice(0, n)
      .map(([k, v]) => `  ${((100 * v) / busy).toFixed(1).padStart(5)}%  ${k}`)
      .join("\n");
  return `${busy} busy samples (${idle} idle); self time, share of the busy samples, by package:
${list(byOwner, top.packages)}

by function:
${list(byFunction, top.functions)}
`;
}
