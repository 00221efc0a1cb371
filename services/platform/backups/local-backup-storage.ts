import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, readdir, rename, rm } from "node:fs/promises";
import path from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { isUuid } from "../../mesh/index.ts";
import { checkBackup, checkFile, checkTenant } from "./backup-names.ts";
import type { BackupKey, BackupStorage } from "./backup-storage.ts";

const staging = ".staging";

/**
 * Backups as files under one directory: `<dir>/<tenant>/<backup id>/<file>`,
 * written first under `<dir>/<tenant>/.staging/<backup id>/` and renamed
 * into place when published, so that a listed backup is always whole.
 * Files are readable by the owner only.
 */
export class LocalBackupStorage implements BackupStorage {
  readonly description: string;
  readonly #dir: string;

  constructor(dir: string) {
    this.#dir = path.resolve(dir);
    this.description = `local:${this.#dir}`;
  }

  async put(key: BackupKey, file: string, body: Readable): Promise<number> {
    const out = createWriteStream(await this.stagedPath(key, file), { mode: 0o600 });
    await pipeline(body, out);
    return out.bytesWritten;
  }

  /** Staged files are written with mode 0600 (see `put`) by whoever writes them. */
  async stagedPath(key: BackupKey, file: string): Promise<string> {
    const dir = this.#staged(key);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    return path.join(dir, checkFile(file));
  }

  async publish(key: BackupKey): Promise<void> {
    await rename(this.#staged(key), this.#published(key));
  }

  async get(key: BackupKey, file: string): Promise<Readable> {
    const stream = createReadStream(path.join(this.#published(key), checkFile(file)));
    // Opening fails here rather than at the first read, so a missing file is told apart from a bad one.
    await new Promise<void>((resolve, reject) => {
      stream.once("open", () => resolve());
      stream.once("error", reject);
    });
    return stream;
  }

  async list(tenantId: string): Promise<string[]> {
    const entries = await readdir(path.join(this.#dir, checkTenant(tenantId)), { withFileTypes: true }).catch((error: NodeJS.ErrnoException) => {
      if (error.code === "ENOENT") {
        return [];
      }
      throw error;
    });
    return entries.filter((e) => e.isDirectory() && isUuid(e.name)).map((e) => e.name);
  }

  async delete(key: BackupKey): Promise<void> {
    await rm(this.#staged(key), { recursive: true, force: true });
    await rm(this.#published(key), { recursive: true, force: true });
  }

  #published(key: BackupKey): string {
    return path.join(this.#dir, checkTenant(key.tenantId), checkBackup(key.backupId));
  }

  #staged(key: BackupKey): string {
    return path.join(this.#dir, checkTenant(key.tenantId), staging, checkBackup(key.backupId));
  }
}
