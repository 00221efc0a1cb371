import { Code, ConnectError } from "@connectrpc/connect";
import { text } from "node:stream/consumers";

/** Options of {@link readSecretInput}. */
export interface SecretInputOptions {
  /** Whether the `--…-stdin` option was given: read the secret from standard input. */
  fromStdin: boolean;
  /** That option's name, for errors, such as "--owner-password-stdin". */
  stdinOption: string;
  /** The environment variable that may hold the secret instead. */
  envName: string;
  /** The environment to read it from. */
  env: Record<string, string | undefined>;
}

/**
 * Returns a secret piped to standard input, or else taken from an
 * environment variable; undefined when neither gives one. Secrets never come
 * from arguments, which other users of the machine can read in the process
 * list. Refuses a terminal as standard input, where the secret would echo.
 */
export async function readSecretInput(options: SecretInputOptions): Promise<string | undefined> {
  if (options.fromStdin) {
    if (process.stdin.isTTY) {
      throw new ConnectError(`${options.stdinOption} reads a pipe, not a terminal: printf '%s' "$SECRET" | tenantry …, or set ${options.envName}`, Code.InvalidArgument);
    }
    const secret = (await text(process.stdin)).replace(/\r?\n$/, "");
    if (secret === "") {
      throw new ConnectError(`${options.stdinOption}: standard input was empty`, Code.InvalidArgument);
    }
    return secret;
  }
  const value = options.env[options.envName];
  return value === undefined || value === "" ? undefined : value;
}
