/**
 * The bounds of the catalog names that start with `prefix`, for a query
 * `name >= $1 and name < $2`: PostgreSQL's `name` compares byte by byte, so
 * these are exactly the names with that prefix, and the catalog's index on
 * names finds them (`starts_with` or LIKE read every role or database).
 */
export function namePrefixBounds(prefix: string): [string, string] {
  if (!/^[\x20-\x7e]+$/.test(prefix)) {
    throw new Error(`a name prefix must be printable ASCII, not ${JSON.stringify(prefix)}`);
  }
  return [prefix, prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1)];
}
