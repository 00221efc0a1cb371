import { ConfigError } from "./config.ts";
import { createLogger, type Logger } from "./logger.ts";
import { startTelemetry } from "./telemetry.ts";

/**
 * Runs a service's `main`: starts telemetry, then the service, and on
 * SIGTERM or SIGINT shuts it down gracefully, flushes telemetry and exits. A
 * configuration error is printed without a stack and exits with status 78
 * (EX_CONFIG).
 *
 * `start` should import the service's modules itself (`await import(…)`):
 * modules that load `pg` before telemetry has started get no SQL spans.
 */
export async function runMain(name: string, start: (log: Logger) => Promise<{ shutdown(): Promise<void> }>): Promise<void> {
  let telemetry;
  let log: Logger | undefined;
  let service: { shutdown(): Promise<void> };
  try {
    telemetry = startTelemetry(name);
    log = createLogger(name);
    service = await start(log);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`configuration error:\n${error.message}\n`);
      process.exit(78);
    }
    (log ?? createLogger(name, "info")).fatal({ err: error }, "failed to start");
    process.exit(1);
  }
  const stop = (signal: string) => {
    log.info({ signal }, "stopping");
    service
      .shutdown()
      .then(() => telemetry.shutdown())
      .then(
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
