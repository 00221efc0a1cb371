import type { FieldMask } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";

/**
 * The paths of an update's `update_mask`, each one of `changeable`:
 * INVALID_ARGUMENT for an empty mask, naming the fields that can change, or
 * for a path that is not one of them. Duplicates are dropped.
 */
export function readFieldMask<P extends string>(mask: FieldMask | undefined, changeable: readonly P[]): P[] {
  const listed = changeable.map((p) => `"${p}"`).join(", ");
  const paths = mask?.paths ?? [];
  if (paths.length === 0) {
    throw new ConnectError(`update_mask is empty: name the fields to change, any of ${listed}`, Code.InvalidArgument);
  }
  const unknown = paths.find((p) => !(changeable as readonly string[]).includes(p));
  if (unknown !== undefined) {
    throw new ConnectError(`update_mask names "${unknown}", which cannot change: only ${listed} can`, Code.InvalidArgument);
  }
  return [...new Set(paths as P[])];
}
