/**
 * @module
 * Work a request starts but need not wait for (the KV write of a read-through answer): tracked
 * here so that shutdown can wait for it instead of cutting it off.
 */

/** A set of in-flight background promises. */
export class BackgroundTasks {
  #pending = new Set<Promise<unknown>>();

  /** Tracks a promise until it settles; its rejection is swallowed (report it before handing it in). */
  waitUntil(work: Promise<unknown>): void {
    const tracked = work.catch(() => {}).finally(() => this.#pending.delete(tracked));
    this.#pending.add(tracked);
  }

  /** How many tasks are still running. */
  get size(): number {
    return this.#pending.size;
  }

  /** Waits for every task tracked so far. */
  async drain(): Promise<void> {
    while (this.#pending.size) await Promise.all([...this.#pending]);
  }
}
