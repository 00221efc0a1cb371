import { Code, ConnectError } from "@connectrpc/connect";

/**
 * A one-line text field (a label, a display name), trimmed; INVALID_ARGUMENT
 * when it holds a control character or is longer than `maxLength`
 * characters. PostgreSQL refuses NUL in text (and the driver reports it as a
 * broken connection); line breaks and escape sequences have no place in a
 * name that lists and terminals show.
 */
export function checkTextLine(value: string, field: string, maxLength: number): string {
  const line = value.trim();
  const control = /\p{Cc}/u.exec(line);
  if (control !== null) {
    const codePoint = control[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0");
    throw new ConnectError(`${field} has a control character (U+${codePoint}); use printable text on one line`, Code.InvalidArgument);
  }
  if ([...line].length > maxLength) {
    throw new ConnectError(`${field} is longer than ${maxLength} characters`, Code.InvalidArgument);
  }
  return line;
}
