import type { MigrationObject } from "@mikro-orm/core";
import { requestLedgerMigration } from "../../mesh/index.ts";
import { CreateEntries } from "./create-entries.ts";

/** Backend's migrations of its schema (`backend` in a dedicated database), oldest first. Names never change once released. */
export const migrations: MigrationObject[] = [
  { name: "0001-create-entries", class: CreateEntries },
  { name: "0002-remember-request-ids", class: requestLedgerMigration() },
];
