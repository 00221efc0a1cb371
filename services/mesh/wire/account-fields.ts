import { Code, ConnectError } from "@connectrpc/connect";

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
