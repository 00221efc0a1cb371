import { Placement, type Tier } from "../../../gen/tenantry/platform/v1/platform_service_pb.js";
import { Code, ConnectError } from "@connectrpc/connect";
import { checkEmail, checkPassword, checkTenantId, checkTextLine } from "../../mesh/index.ts";
import { checkTier } from "../tenant-messages.ts";

/** A request for a new tenant. */
export interface NewTenant {
  tenantId: string;
  displayName: string;
  tier: Tier;
  /** The cluster asked for; empty lets placement choose. */
  cluster: string;
  /** The region asked for when no cluster is; empty means any. */
  region: string;
  /** The owner Auth creates; empty for none. */
  ownerEmail: string;
  ownerPassword: string;
  /** The placement asked for; UNSPECIFIED (or none) takes the tier's. */
  placement?: Placement;
}

/**
 * Checks a request for a new tenant before anything is made, and returns
 * it as it is recorded: the display name trimmed (the id when empty), the
 * tier STANDARD when unspecified, the owner's email trimmed. INVALID_ARGUMENT
 * names the field at fault.
 */
export function checkNewTenant(request: NewTenant): NewTenant {
  const tenantId = checkTenantId(request.tenantId);
  if (request.placement !== undefined && Placement[request.placement] === undefined) {
    throw new ConnectError(`unknown placement ${request.placement}: use PLACEMENT_DEDICATED or PLACEMENT_POOLED, or leave it unspecified for the tier's`, Code.InvalidArgument);
  }
  return { ...request, tenantId, displayName: checkDisplayName(request.displayName, tenantId), tier: checkTier(request.tier), ...checkOwner(request) };
}

/** Both owner fields or neither, checked as Auth will; the email trimmed. */
function checkOwner(request: { ownerEmail: string; ownerPassword: string }): { ownerEmail: string; ownerPassword: string } {
  if (request.ownerEmail.trim() === "" && request.ownerPassword === "") {
    return { ownerEmail: "", ownerPassword: "" };
  }
  return { ownerEmail: checkEmail(request.ownerEmail, "owner_email"), ownerPassword: checkPassword(request.ownerPassword, "owner_password") };
}

function checkDisplayName(displayName: string, tenantId: string): string {
  const name = checkTextLine(displayName, "display_name", 200);
  return name === "" ? tenantId : name;
}
