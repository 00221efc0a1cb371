import { Code, ConnectError } from "@connectrpc/connect";
import { readFile } from "node:fs/promises";
import path from "node:path";

/** The environment variables {@link readOperatorToken} looks at. */
export interface OperatorTokenEnv {
  /** The token itself; wins over the file. */
  TENANTRY_OPERATOR_TOKEN?: string | undefined;
  /** The data directory holding `operator.token`; `.tenantry` when unset. */
  TENANTRY_DATA_DIR?: string | undefined;
}

/**
 * Returns the operator token from `TENANTRY_OPERATOR_TOKEN`, else from
 * `operator.token` in the data directory, where Platform generates it on
 * first start. Never creates the file: a token made up here would only be
 * refused. Fails with UNAUTHENTICATED, naming where it looked.
 */
export async function readOperatorToken(env: OperatorTokenEnv): Promise<string> {
  if (env.TENANTRY_OPERATOR_TOKEN !== undefined && env.TENANTRY_OPERATOR_TOKEN !== "") {
    return env.TENANTRY_OPERATOR_TOKEN;
  }
  const file = path.resolve(env.TENANTRY_DATA_DIR || ".tenantry", "operator.token");
  let token: string;
  try {
    token = (await readFile(file, "utf8")).trim();
  } catch (error) {
    const reason = (error as { code?: string }).code === "ENOENT" ? "does not exist" : `cannot be read (${(error as Error).message})`;
    throw missing(file, reason);
  }
  if (token === "") {
    throw missing(file, "is empty");
  }
  return token;
}

function missing(file: string, reason: string): ConnectError {
  return new ConnectError(
    `no operator token: TENANTRY_OPERATOR_TOKEN is not set and ${file} ${reason}; ` +
      "set TENANTRY_OPERATOR_TOKEN, or TENANTRY_DATA_DIR to Platform's data directory",
    Code.Unauthenticated,
  );
}
