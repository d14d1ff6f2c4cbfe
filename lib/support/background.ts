/** @module Work a request need not wait for, tracked so that shutdown waits for it rather than cut it. */

/** A set of in-flight background promises. */
export class BackgroundTasks {
  #pending = new Set<Promise<unknown>>();

  /** Tracks a promise until it settles; its rejection is swallowed (report it before handing it in). */
  waitUntil(work: Promise<unknown>): void {
    const tracked = work.catch(() => {}).finally(() => this.#pending.delete(tracked));
    this.#pending.add(tracked);
  }

  get size(): number {
    return this.#pending.size;
  }

  async drain(): Promise<void> {
    while (this.#pending.size) await Promise.all([...this.#pending]);
  }
}
