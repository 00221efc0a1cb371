import type { Client } from "@connectrpc/connect";
import type { EntryService } from "../../gen/tenantry/backend/v1/entry_service_pb.js";
import { retried } from "./retried.ts";

/** Every entry's title of the tenant as Backend serves them, page after page (a tenant under load has more than a page of 500), sorted. */
export async function entryTitles(entries: Client<typeof EntryService>, tenantId: string): Promise<string[]> {
  const found: string[] = [];
  let pageToken = "";
  do {
    const page = await retried(() => entries.listEntries({ pageSize: 500, pageToken }, { headers: { "x-tenant-id": tenantId } }));
    found.push(...page.entries.map((e) => e.title));
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return found.sort();
}
