import { runMain } from "../mesh/run-main.ts";
import { start } from "./start.ts";

await runMain("platform", (log, telemetry) => start(process.env, log, telemetry));
