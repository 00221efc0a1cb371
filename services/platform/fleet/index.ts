export { FleetMigrations } from "./fleet-migrations.ts";
