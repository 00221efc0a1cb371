import type { MigrationObject } from "@mikro-orm/core";
import { CreateRegistry } from "./create-registry.ts";

/** Platform's migrations of its own database, oldest first. Names never change once released. */
export const migrations: MigrationObject[] = [{ name: "0001-create-registry", class: CreateRegistry }];
