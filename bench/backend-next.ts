// Backend's next version for the fleet benchmark: the same service with one
// more migration, which a fleet migration then rolls out.
import { runMain } from "../services/mesh/run-main.ts";

await runMain("backend", async (log, telemetry) => {
  const { Migration } = await import("@mikro-orm/migrations");
  const { startBackend } = await import("../services/backend/backend.ts");
  const { readBackendConfig } = await import("../services/backend/config.ts");
  const { migrations } = await import("../services/backend/migrations/index.ts");
  class AddEntrySummaries extends Migration {
    override up(): void {
      this.addSql("alter table backend.entries add column summary text");
    }
  }
  const next = `${String(migrations.length + 1).padStart(4, "0")}-add-entry-summaries`;
  return startBackend(readBackendConfig(), log, telemetry, { migrations: [...migrations, { name: next, class: AddEntrySummaries }] });
});
