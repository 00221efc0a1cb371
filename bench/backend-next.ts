// Backend's next version for the fleet benchmark: the same service with one
// more migration, which a fleet migration then rolls out.
import { Migration } from "@mikro-orm/migrations";
import { startBackend } from "../services/backend/backend.ts";
import { readBackendConfig } from "../services/backend/config.ts";
import { migrations } from "../services/backend/migrations/index.ts";
import { createLogger, runMain } from "../services/mesh/index.ts";

class AddEntrySummaries extends Migration {
  override up(): void {
    this.addSql("alter table backend.entries add column summary text");
  }
}

const log = createLogger("backend");
await runMain(log, () => startBackend(readBackendConfig(), log, [...migrations, { name: "0002-add-entry-summaries", class: AddEntrySummaries }]));
