import { ConfigError } from "./config.ts";
import type { Logger } from "./logger.ts";

/**
 * Runs a service's `main`: starts it, and on SIGTERM or SIGINT shuts it down
 * gracefully and exits. A configuration error is printed without a stack and
 * exits with status 78 (EX_CONFIG).
 */
export async function runMain(log: Logger, start: () => Promise<{ shutdown(): Promise<void> }>): Promise<void> {
  let service: { shutdown(): Promise<void> };
  try {
    service = await start();
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`configuration error:\n${error.message}\n`);
      process.exit(78);
    }
    log.fatal({ err: error }, "failed to start");
    process.exit(1);
  }
  const stop = (signal: string) => {
    log.info({ signal }, "stopping");
    service.shutdown().then(
      () => process.exit(0),
      (error: unknown) => {
        log.error({ err: error }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.once("SIGTERM", () => stop("SIGTERM"));
  process.once("SIGINT", () => stop("SIGINT"));
}
