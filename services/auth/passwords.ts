import { hash, verify, type Algorithm } from "@node-rs/argon2";
import { Code, ConnectError } from "@connectrpc/connect";

/** Argon2id with the OWASP baseline (19 MiB, 2 passes, 1 lane): ≈35 ms a hash here. */
const options = { algorithm: 2 satisfies Algorithm.Argon2id as Algorithm, memoryCost: 19_456, timeCost: 2, parallelism: 1 };

/** A hash checked against when the email is unknown, so that a login costs the same either way. */
let decoy: Promise<string> | undefined;

/** Hashes a password for storage. */
export function hashPassword(password: string): Promise<string> {
  return hash(password, options);
}

/** Whether `password` matches `stored`; with no stored hash, spends the same time and says no. */
export async function verifyPassword(stored: string | undefined, password: string): Promise<boolean> {
  if (stored === undefined) {
    decoy ??= hashPassword("tenantry-decoy-password");
    await verify(await decoy, password).catch(() => false);
    return false;
  }
  return verify(stored, password).catch(() => false);
}

/** Refuses passwords too weak to store: shorter than 10 characters, or longer than 200. */
export function checkPassword(password: string, field = "password"): string {
  const length = [...password].length;
  if (length < 10) {
    throw new ConnectError(`${field} must have at least 10 characters`, Code.InvalidArgument);
  }
  if (length > 200) {
    throw new ConnectError(`${field} must have at most 200 characters`, Code.InvalidArgument);
  }
  return password;
}

/** A plausible email address, trimmed; INVALID_ARGUMENT otherwise. */
export function checkEmail(email: string, field = "email"): string {
  const trimmed = email.trim();
  if (trimmed.length > 320 || !/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(trimmed)) {
    throw new ConnectError(`${field} is not an email address`, Code.InvalidArgument);
  }
  return trimmed;
}
