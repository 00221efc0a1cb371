import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";

/** An S3-compatible server running as a process of its own, with one empty bucket. */
export interface S3Server {
  /** Its URL, such as `http://127.0.0.1:40123`. */
  endpoint: string;
  /** The bucket it was started with. */
  bucket: string;
  /** The access key it accepts (requests are signed and checked). */
  accessKeyId: string;
  secretAccessKey: string;
  /** Everything it has written so far: a line per request it served. */
  output(): string;
  /** Stops the process and removes its data. */
  stop(): Promise<void>;
}

const require = createRequire(import.meta.url);

/**
 * Starts s3rver (an S3 server on the local file system, from npm) on a
 * free loopback port, with `bucket` created, and resolves once it listens.
 */
export async function startS3Server(bucket = "tenantry-backups"): Promise<S3Server> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "tenantry-s3-"));
  const main = path.join(path.dirname(require.resolve("s3rver/package.json")), "bin/s3rver.js");
  // s3rver makes ListObjectsV2's continuation tokens with DES, which OpenSSL 3 has only in its legacy provider.
  const child = spawn(process.execPath, ["--openssl-legacy-provider", main, "-d", dir, "-a", "127.0.0.1", "-p", "0", "--configure-bucket", bucket], {
    env: { PATH: process.env.PATH },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const listening = new Promise<number>((resolve, reject) => {
    const seen = (chunk: Buffer) => {
      output += chunk.toString();
      const m = /S3rver listening on [^:\s]+:(\d+)/.exec(output);
      if (m !== null) {
        resolve(Number(m[1]));
      }
    };
    child.stdout!.on("data", seen);
    child.stderr!.on("data", seen);
    child.once("error", reject);
    child.once("exit", (code, signal) => reject(new Error(`s3rver exited (${signal ?? code}) before listening:\n${output}`)));
  });
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const port = await listening;
    return { endpoint: `http://127.0.0.1:${port}`, bucket, accessKeyId: "S3RVER", secretAccessKey: "S3RVER", output: () => output, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}
