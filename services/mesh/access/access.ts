import { getOption, type DescMethod } from "@bufbuild/protobuf";
import { access, AccessKind, type Access } from "../../../gen/tenantry/options/v1/access_pb.js";

export { AccessKind };

const cache = new WeakMap<DescMethod, Access>();

/** Returns the access rule a method declares in its `tenantry.options.v1.access` option. */
export function accessOf(method: DescMethod): Access {
  let rule = cache.get(method);
  if (rule === undefined) {
    rule = getOption(method, access);
    cache.set(method, rule);
  }
  return rule;
}
