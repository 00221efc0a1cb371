import { randomBytes } from "node:crypto";
import { link, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { ConfigError, generatedSecrets } from "./config.ts";

/** Options of {@link loadSecret}. */
export interface LoadSecretOptions {
  /** The value from the environment; when set, no file is read or written. */
  value?: string | undefined;
  /** The data directory the secret is generated into when `value` is not set. */
  dataDir: string;
  /** The file's name inside `dataDir`, such as "mesh.key". */
  file: string;
  /** How many random bytes a generated secret has (written base64url). */
  bytes?: number;
  /** Whether a missing secret may be generated; false in production (see `generatedSecrets`). */
  generate?: boolean;
}

/** A secret and where it came from. */
export interface Secret {
  value: string;
  /** The file holding it, or undefined when it came from the environment. */
  path?: string;
}

/**
 * Returns a secret from the environment, else from its file in the data
 * directory, generating that file (mode 0600) on first use. Processes that
 * share the data directory and start together end up with the same value:
 * the file appears atomically, written in full, and the first one wins.
 */
export async function loadSecret(options: LoadSecretOptions): Promise<Secret> {
  if (options.value !== undefined && options.value !== "") {
    return { value: options.value };
  }
  const file = path.resolve(options.dataDir, options.file);
  await mkdir(path.dirname(file), { recursive: true });
  const existing = await readSecretFile(file);
  if (existing !== undefined) {
    return { value: existing, path: file };
  }
  if (options.generate === false) {
    const variable = Object.entries(generatedSecrets).find(([, name]) => name === options.file)?.[0] ?? options.file;
    throw new ConfigError(`${variable}: required with TENANTRY_ENV=production, where nothing is generated (not set, and no ${file})`);
  }
  const draft = `${file}.${process.pid}.${randomBytes(4).toString("hex")}`;
  await writeFile(draft, `${randomBytes(options.bytes ?? 32).toString("base64url")}\n`, { mode: 0o600 });
  try {
    await link(draft, file);
  } catch (error) {
    if ((error as { code?: string }).code !== "EEXIST") {
      throw error;
    }
  } finally {
    await rm(draft, { force: true });
  }
  const value = await readSecretFile(file);
  if (value === undefined) {
    throw new Error(`${file} is empty: delete it or set the secret in the environment`);
  }
  return { value, path: file };
}

async function readSecretFile(file: string): Promise<string | undefined> {
  try {
    const value = (await readFile(file, "utf8")).trim();
    return value === "" ? undefined : value;
  } catch (error) {
    if ((error as { code?: string }).code === "ENOENT") {
      return undefined;
    }
    throw error;
  }
}
