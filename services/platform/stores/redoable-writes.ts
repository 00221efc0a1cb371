import type { EntityManager } from "@mikro-orm/postgresql";

/**
 * Runs `work` in a transaction on `em`, flushes what it changed there, and
 * commits without waiting for the write-ahead log to reach the disk
 * (`synchronous_commit = off`): for records of progress that a crash of the
 * database server may take back because the work they record is done again
 * as it was, such as the steps of a provisioning, each idempotent. Platform
 * dying loses nothing (the server has the commit), and the next durable
 * commit makes it durable too, since the log is written in order.
 */
export async function writeRedoable<T>(em: EntityManager, work: () => Promise<T>): Promise<T> {
  await em.begin();
  try {
    await em.execute("set local synchronous_commit = off");
    const result = await work();
    await em.commit();
    return result;
  } catch (error) {
    await em.rollback().catch(() => undefined);
    throw error;
  }
}
