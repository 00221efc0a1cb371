import net from "node:net";
import { StartError } from "./mesh/index.ts";

/** A port `npm start` will listen on, and the variable that sets it. */
export interface PortSetting {
  variable: string;
  port: number;
  host: string;
}

/**
 * Checks that every port is distinct and free to listen on, before anything
 * starts; throws a {@link StartError} naming each variable to change.
 */
export async function checkPortsFree(settings: PortSetting[]): Promise<void> {
  const byPort = new Map<number, string[]>();
  for (const setting of settings) {
    byPort.set(setting.port, [...(byPort.get(setting.port) ?? []), setting.variable]);
  }
  const shared = [...byPort].filter(([, variables]) => variables.length > 1);
  if (shared.length > 0) {
    throw new StartError(
      shared.map(([port, variables]) => `${variables.join(" and ")} are all set to port ${port}`).join("; "),
      "give each of them a port of its own",
    );
  }
  const taken: PortSetting[] = [];
  for (const setting of settings) {
    if (!(await canListen(setting))) {
      taken.push(setting);
    }
  }
  if (taken.length > 0) {
    throw new StartError(
      taken.map((s) => `port ${s.port} on ${s.host} (${s.variable}) is already in use`).join("; "),
      `stop what listens there, or set ${taken.map((s) => s.variable).join(", ")} to ${taken.length === 1 ? "a free port" : "free ports"}`,
    );
  }
}

function canListen(setting: PortSetting): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.once("error", () => resolve(false));
    probe.listen({ port: setting.port, host: setting.host, exclusive: true }, () => probe.close(() => resolve(true)));
  });
}
