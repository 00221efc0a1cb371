import { readFile } from "node:fs/promises";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";

/** Options of {@link startWebServer}. */
export interface WebServerOptions {
  /** The directory {@link buildWebClient} wrote. */
  dir: string;
  /** The address to listen on. */
  host: string;
  /** The port to listen on; 0 picks a free one. */
  port: number;
}

/** The browser client's server, listening. */
export interface WebServer {
  /** The page's origin, e.g. `http://127.0.0.1:8080`: what TENANTRY_CORS_ORIGINS must allow. */
  origin: string;
  port: number;
  close(): Promise<void>;
}

const page = { file: "index.html", type: "text/html; charset=utf-8" };
const bundle = { file: "main.js", type: "text/javascript; charset=utf-8" };
const routes = new Map([
  ["/", page],
  ["/index.html", page],
  ["/main.js", bundle],
]);

/**
 * Serves the built browser client (its page and bundle, nothing else) over
 * HTTP/1.1. The page calls the services' HTTP ports, which are other origins,
 * so this server needs no CORS of its own.
 */
export async function startWebServer(options: WebServerOptions): Promise<WebServer> {
  const contents = new Map<string, Buffer>();
  for (const { file } of [page, bundle]) {
    contents.set(file, await readFile(path.join(options.dir, file)));
  }
  const server = http.createServer((req, res) => {
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain; charset=utf-8" }).end("method not allowed\n");
      return;
    }
    const found = routes.get((req.url ?? "/").split("?")[0]);
    if (found === undefined) {
      res.writeHead(404, { "content-type": "text/plain; charset=utf-8" }).end("not found\n");
      return;
    }
    const body = contents.get(found.file)!;
    res.writeHead(200, {
      "content-type": found.type,
      "content-length": body.length,
      // A rebuilt bundle must not meet a cached page.
      "cache-control": "no-cache",
      "x-content-type-options": "nosniff",
    });
    res.end(req.method === "HEAD" ? undefined : body);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    origin: `http://${options.host.includes(":") ? `[${options.host}]` : options.host}:${port}`,
    port,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()));
        server.closeAllConnections();
      }),
  };
}
