/** A piece of work of a {@link runTaskGraph}, run on one of its workers once the tasks it waits for are done. */
export interface Task<W> {
  /** What it is, for errors and tests. */
  name: string;
  /** Among the tasks ready to run, the lowest goes first. */
  priority: number;
  /** Tasks that must be done before this one starts. */
  after?: readonly Task<W>[];
  run(worker: W): Promise<void>;
}

/**
 * Runs tasks on workers (database connections), each worker one task at a
 * time, a task once every task it waits for is done, the ready task of
 * lowest priority first. On the first failure no task starts any more; once
 * the tasks under way have ended, that failure is thrown.
 */
export async function runTaskGraph<W>(workers: readonly W[], tasks: readonly Task<W>[]): Promise<void> {
  const waitingOn = new Map(tasks.map((task) => [task, new Set(task.after ?? [])]));
  for (const [task, before] of waitingOn) {
    for (const other of before) {
      if (!waitingOn.has(other)) {
        throw new Error(`task ${task.name} waits for ${other.name}, which is not in the graph`);
      }
    }
  }
  const ready: Task<W>[] = [];
  const release = (done?: Task<W>) => {
    for (const [task, before] of waitingOn) {
      if (done !== undefined) {
        before.delete(done);
      }
      if (before.size === 0) {
        waitingOn.delete(task);
        ready.push(task);
      }
    }
    ready.sort((a, b) => a.priority - b.priority);
  };
  release();
  if (ready.length === 0 && waitingOn.size > 0) {
    throw new Error("the tasks wait for one another: none can start");
  }
  let failure: { error: unknown } | undefined;
  let running = 0;
  let wake: () => void = () => {};
  let changed = new Promise<void>((resolve) => (wake = resolve));
  const signal = () => {
    wake();
    changed = new Promise<void>((resolve) => (wake = resolve));
  };
  const work = async (worker: W) => {
    for (;;) {
      if (failure !== undefined) {
        return;
      }
      const task = ready.shift();
      if (task === undefined) {
        if (waitingOn.size === 0 || running === 0) {
          // Nothing left, or nothing that can ever start (tasks waiting for one another).
          return;
        }
        await changed;
        continue;
      }
      running++;
      try {
        await task.run(worker);
        release(task);
      } catch (error) {
        failure ??= { error };
      } finally {
        running--;
        signal();
      }
    }
  };
  await Promise.all(workers.map(work));
  if (failure !== undefined) {
    throw failure.error;
  }
  if (waitingOn.size > 0) {
    throw new Error(`the tasks wait for one another: ${[...waitingOn.keys()].map((t) => t.name).join(", ")} never started`);
  }
}
