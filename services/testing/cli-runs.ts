import { spawn } from "node:child_process";
import path from "node:path";
import { expect } from "vitest";

const root = path.resolve(import.meta.dirname, "../..");
const main = path.join(root, "services/cli/main.ts");

/** How a CLI run ended. */
export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Options of one CLI run. */
export interface CliRunOptions {
  /** Settings over the defaults (the mesh's Platform and operator token); undefined removes one. */
  env?: Record<string, string | undefined>;
  /** What to pipe into standard input. */
  input?: string;
  cwd?: string;
  /** The program to run instead of `node services/cli/main.ts`. */
  command?: [string, ...string[]];
}

/** A CLI run on a terminal: what the terminal has shown so far, and its end. */
export interface TerminalRun {
  /** Resolves once the terminal has shown something that matches (or the run ended). */
  shown(pattern: RegExp): Promise<string>;
  /** Its exit code and everything the terminal showed (stdout and stderr together). */
  done: Promise<{ code: number | null; screen: string }>;
}

/** The Platform a CLI run talks to. */
export interface CliTarget {
  platformAddress: string;
  operatorToken: string;
}

/**
 * Runs the `tenantry` CLI in processes of their own, as an operator or a
 * script would, against the Platform `target()` names when each run starts
 * (a test mesh made in `beforeAll`).
 */
export function cliRuns(target: () => CliTarget) {
  /** The CLI's environment: the Platform and operator token with `overrides` over them, and no other TENANTRY_ setting. */
  const cliEnv = (overrides: Record<string, string | undefined> = {}): Record<string, string> => {
    const { platformAddress, operatorToken } = target();
    const settings = { TENANTRY_PLATFORM_ADDRESS: platformAddress, TENANTRY_OPERATOR_TOKEN: operatorToken, ...overrides };
    const env: Record<string, string> = {};
    for (const [name, value] of Object.entries({ ...process.env, ...settings })) {
      if (value !== undefined && (!name.startsWith("TENANTRY_") || name in settings)) {
        env[name] = value;
      }
    }
    return env;
  };

  /** Runs the CLI with stdout and stderr piped. */
  const tenantry = (args: string[], options: CliRunOptions = {}): Promise<CliRun> => {
    const env = cliEnv(options.env);
    const [program, ...programArgs] = options.command ?? [process.execPath, main];
    return new Promise((resolve, reject) => {
      const child = spawn(program, [...programArgs, ...args], { cwd: options.cwd ?? root, env, stdio: ["pipe", "pipe", "pipe"] });
      let stdout = "";
      let stderr = "";
      child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
      child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
      child.on("error", reject);
      child.on("close", (code) => resolve({ code, stdout, stderr }));
      child.stdin.end(options.input ?? "");
    });
  };

  /** Runs the CLI in a pseudo-terminal 200 columns wide (util-linux `script`), as an operator at a terminal would. */
  const tenantryOnTerminal = (args: string[]): TerminalRun => {
    const quote = (word: string) => `'${word.replaceAll("'", "'\\''")}'`;
    const line = `stty cols 200 && exec ${[process.execPath, main, ...args].map(quote).join(" ")}`;
    const child = spawn("script", ["--quiet", "--return", "--command", line, "/dev/null"], { cwd: root, env: cliEnv(), stdio: ["ignore", "pipe", "pipe"] });
    let screen = "";
    const waiting: { pattern: RegExp; resolve: (screen: string) => void }[] = [];
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      screen += chunk;
      for (const wait of waiting.filter((w) => w.pattern.test(screen))) {
        waiting.splice(waiting.indexOf(wait), 1);
        wait.resolve(screen);
      }
    });
    const done = new Promise<{ code: number | null; screen: string }>((resolve, reject) => {
      child.on("error", reject);
      child.on("close", (code) => {
        for (const wait of waiting) {
          wait.resolve(screen);
        }
        resolve({ code, screen });
      });
    });
    return { shown: (pattern) => new Promise((resolve) => (pattern.test(screen) ? resolve(screen) : waiting.push({ pattern, resolve }))), done };
  };

  /** Runs the CLI with --json and returns its parsed stdout, expecting `code`. */
  const json = async (args: string[], code = 0, options: CliRunOptions = {}): Promise<any> => {
    const run = await tenantry(["--json", ...args], options);
    expect(run, run.stderr).toMatchObject({ code });
    return JSON.parse(run.stdout);
  };

  return { cliEnv, tenantry, tenantryOnTerminal, json, root, main };
}
