import type { BatchObservableResult, Meter } from "@opentelemetry/api";
import type { MikroORM } from "@mikro-orm/postgresql";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "../mesh/index.ts";
import type { ClusterRegistry } from "./cluster-registry.ts";
import { moveIdOf, replicationPrefix } from "./moves/index.ts";
import { countRunningMoves, findMove, listClusters, moveModes } from "./stores/index.ts";

/** How long one cluster may take to list its replication slots at a collection: one that cannot be reached is left out, not waited for. */
const clusterTimeoutMs = 2000;

/**
 * Publishes tenant moves as metrics, read at each collection (a scrape of
 * `/metrics`): moves under way by mode, and on each cluster the
 * replication slots named after moves with the age of the oldest (since
 * its move began; since this process first saw it, for a slot whose move
 * is unknown). A slot keeps its server's WAL while it lasts: alert on an
 * age past what a move should take. Returns the function that stops
 * publishing them.
 */
export function observeMoves(meter: Meter, options: { orm: MikroORM; clusters: ClusterRegistry; log: Logger }): () => void {
  const running = meter.createObservableGauge("tenantry.moves.running", {
    description: "Tenant moves under way, by mode.",
  });
  const slots = meter.createObservableGauge("tenantry.moves.slots", {
    description: "Replication slots of tenant moves on each cluster.",
  });
  const oldest = meter.createObservableGauge("tenantry.moves.slot.age.max.seconds", {
    description: "Age in seconds of the oldest replication slot of a tenant move on each cluster (0 without one).",
  });
  const firstSeen = new Map<string, number>();
  const observables = [running, slots, oldest];
  const callback = async (result: BatchObservableResult) => {
    const em = options.orm.em.fork();
    try {
      const counts = await countRunningMoves(em);
      for (const mode of Object.values(moveModes)) {
        result.observe(running, counts.get(mode) ?? 0, { mode });
      }
      const now = Date.now();
      await Promise.all(
        (await listClusters(em)).map(async ({ cluster }) => {
          const names = await Promise.race([
            options.clusters.admin(cluster.name, async (admin) =>
              (await admin.query<{ name: string }>("select slot_name as name from pg_replication_slots where slot_name like $1", [`${replicationPrefix}%`])).rows.map((r) => r.name),
            ),
            sleep(clusterTimeoutMs, undefined, { ref: false }),
          ]).catch(() => undefined);
          if (names === undefined) {
            return;
          }
          let age = 0;
          for (const name of names) {
            const move = await findMove(em, moveIdOf(name) ?? "00000000-0000-0000-0000-000000000000");
            const since = move?.createdAt.getTime() ?? firstSeen.get(name) ?? now;
            firstSeen.set(name, since);
            age = Math.max(age, (now - since) / 1000);
          }
          result.observe(slots, names.length, { cluster: cluster.name });
          result.observe(oldest, age, { cluster: cluster.name });
        }),
      );
    } catch (error) {
      options.log.warn({ err: error }, "move metrics could not be read");
    }
  };
  meter.addBatchObservableCallback(callback, observables);
  return () => meter.removeBatchObservableCallback(callback, observables);
}
