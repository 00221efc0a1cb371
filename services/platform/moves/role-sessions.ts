import { setTimeout as sleep } from "node:timers/promises";
import type pg from "pg";

/** How often a role's sessions are looked for again while they end. */
const pollMs = 5;

/**
 * Ends the sessions of `role` on a server (on an admin connection to it)
 * that began by `before`, and resolves once they are gone: a write
 * committing as its session was told to end has then committed, and no
 * other can. Asked twice in a row to find none, since a session that was
 * starting as they were looked for shows up a moment later.
 */
export async function endRoleSessions(admin: pg.ClientBase, role: string, before: Date): Promise<void> {
  for (let quiet = 0; quiet < 2; ) {
    // Told at once, all of them; pg_terminate_backend's own wait looks every 100 ms, one session after another.
    const { rowCount } = await admin.query(
      "select pg_terminate_backend(pid) from pg_stat_activity where usename = $1 and backend_start <= $2 and pid <> pg_backend_pid() and backend_type = 'client backend'",
      [role, before],
    );
    quiet = rowCount === 0 ? quiet + 1 : 0;
    await sleep(pollMs);
  }
}
