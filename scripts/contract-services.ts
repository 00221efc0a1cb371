import type { DescFile, DescService } from "@bufbuild/protobuf";
import { readdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const repositoryRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

/**
 * Every RPC service of the generated contracts (the `file_*` descriptors of
 * each `*_pb.js` module below `gen/`), in file order: what `npm run check`
 * holds the access rules against, and what specs take "every permission"
 * from, so that a contract added later is never left out.
 */
export async function contractServices(root = repositoryRoot): Promise<DescService[]> {
  const gen = path.join(root, "gen");
  const modules = readdirSync(gen, { recursive: true, encoding: "utf8" })
    .filter((file) => file.endsWith("_pb.js"))
    .sort();
  const files: DescFile[] = [];
  for (const module of modules) {
    const exports = (await import(pathToFileURL(path.join(gen, module)).href)) as Record<string, unknown>;
    files.push(...Object.entries(exports).filter(([name]) => name.startsWith("file_")).map(([, file]) => file as DescFile));
  }
  return files.flatMap((file) => file.services);
}
