import { ConfigError, readConfig, telemetryEnv } from "./runtime/config.ts";
import { createLogger, type Logger } from "./telemetry/logger.ts";
import { startTelemetry, type Telemetry } from "./telemetry/telemetry.ts";

/**
 * Runs a service's `main`: reads the settings of logs and metrics, starts
 * the process's telemetry and logger, then the service, given both; on
 * SIGTERM or SIGINT it shuts the service down gracefully, flushes telemetry
 * and exits. A configuration error is printed without a stack and exits
 * with status 78 (EX_CONFIG).
 *
 * `start` should import the service's modules itself (`await import(…)`):
 * modules that load `pg` before telemetry has started get no SQL spans. For
 * the same reason a `main` imports `runMain` from this file, not from the
 * mesh's index.ts, and nothing this file imports loads `pg`.
 */
export async function runMain(
  name: string,
  start: (log: Logger, telemetry: Telemetry) => Promise<{ shutdown(): Promise<void> }>,
): Promise<void> {
  let telemetry;
  let log: Logger | undefined;
  let service: { shutdown(): Promise<void> };
  try {
    const config = readConfig(telemetryEnv);
    telemetry = startTelemetry({ service: name, tenantSeries: config.TENANTRY_METRICS_TENANT_SERIES });
    log = createLogger(name, config.TENANTRY_LOG_LEVEL);
    service = await start(log, telemetry);
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
