import type { MigrationObject } from "@mikro-orm/core";
import { requestLedgerMigration } from "../../mesh/index.ts";
import { CreateAuthSchema } from "./create-auth-schema.ts";
import { CreateIdentity } from "./create-identity.ts";

/** Auth's migrations of its schema (`auth` in a dedicated database), oldest first. Names never change once released. */
export const migrations: MigrationObject[] = [
  { name: "0001-create-auth-schema", class: CreateAuthSchema },
  { name: "0002-create-identity", class: CreateIdentity },
  { name: "0003-remember-request-ids", class: requestLedgerMigration() },
];
