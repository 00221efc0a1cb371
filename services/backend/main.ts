import { runMain } from "../mesh/run-main.ts";
import { start } from "./start.ts";

await runMain("backend", (log, telemetry) => start(process.env, log, telemetry));
