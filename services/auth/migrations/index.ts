import type { MigrationObject } from "@mikro-orm/core";
import { CreateAuthSchema } from "./create-auth-schema.ts";

/** Auth's migrations of schema `auth`, oldest first. Names never change once released. */
export const migrations: MigrationObject[] = [{ name: "0001-create-auth-schema", class: CreateAuthSchema }];
