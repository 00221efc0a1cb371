import { build } from "esbuild";
import { copyFile, mkdir } from "node:fs/promises";
import path from "node:path";

const here = path.dirname(new URL(import.meta.url).pathname);

/** Where `npm start` builds the browser client (ignored by git). */
export const webClientDir = path.join(here, "dist");

/**
 * Bundles the browser client into `outDir` as `index.html` and `main.js`, the
 * two files {@link startWebServer} serves. Bundling takes a fraction of a
 * second, so callers build at start rather than keep a build around.
 */
export async function buildWebClient(outDir: string): Promise<void> {
  await mkdir(outDir, { recursive: true });
  await build({
    entryPoints: [path.join(here, "main.ts")],
    outfile: path.join(outDir, "main.js"),
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    minify: true,
    logLevel: "silent",
  });
  await copyFile(path.join(here, "index.html"), path.join(outDir, "index.html"));
}
