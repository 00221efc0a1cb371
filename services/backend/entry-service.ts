import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { EntryService, type EntrySchema } from "../../gen/tenantry/backend/v1/entry_service_pb.js";
import { entityManagerOf, readFieldMask, tenantOf, type Tenancy } from "../mesh/index.ts";
import { createEntry, deleteEntry, etagOf, getEntry, listEntries, updateEntry, type EntryChange, type EntryData } from "./entries.ts";

export { EntryService };

/**
 * `tenantry.backend.v1.EntryService`: each call runs on the tenant's own
 * EntityManager (GetEntry, which needs none, reads with one query on the
 * tenant's connection); writes that add data are refused once the tenant is over its
 * tier's storage (deleting is always allowed); a create with a request_id
 * happens once, however often it is sent.
 */
export const entryService = (tenancy: Tenancy): ServiceImpl<typeof EntryService> => ({
  async createEntry(req, ctx) {
    await tenancy.storage.checkWritable(tenantOf(ctx));
    return tenancy.requests.createOnce(ctx, req, async (em) => ({ entry: toMessage(await createEntry(em, req)) }));
  },
  async getEntry(req, ctx) {
    return { entry: toMessage(await getEntry(tenancy, req.id)) };
  },
  async listEntries(req, ctx) {
    const page = await listEntries(entityManagerOf(ctx), req);
    return { entries: page.entries.map(toMessage), nextPageToken: page.nextPageToken };
  },
  async updateEntry(req, ctx) {
    const paths = readFieldMask(req.updateMask, ["title", "body", "tags"]);
    const change: EntryChange = {
      etag: req.etag,
      ...(paths.includes("title") && { title: req.title }),
      ...(paths.includes("body") && { body: req.body }),
      ...(paths.includes("tags") && { tags: req.tags }),
    };
    await tenancy.storage.checkWritable(tenantOf(ctx));
    return { entry: toMessage(await updateEntry(entityManagerOf(ctx), req.id, change)) };
  },
  async deleteEntry(req, ctx) {
    await deleteEntry(entityManagerOf(ctx), req.id);
    return {};
  },
});

function toMessage(entry: EntryData): MessageInitShape<typeof EntrySchema> {
  return {
    id: entry.id,
    title: entry.title,
    body: entry.body,
    tags: entry.tags,
    etag: etagOf(entry),
    createTime: timestampFromDate(entry.createdAt),
    updateTime: timestampFromDate(entry.updatedAt),
  };
}
