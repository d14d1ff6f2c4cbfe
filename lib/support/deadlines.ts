/**
 * @module
 * The one timeout mechanism: many deadlines on one interval timer, which fires expired ones at
 * most one tick late, runs only while deadlines are armed, and keeps the process alive only while
 * a `within` call is awaited. One sweep is created at start-up (`Deps.deadlines`).
 */

/** A set of deadlines checked by one interval timer. */
export class DeadlineSweep {
  readonly #tickMs: number;
  readonly #now: () => number;
  readonly #armed = new Set<{ at: number; onExpire: () => void }>();
  #timer: ReturnType<typeof setInterval> | undefined;
  #holding = 0;

  /**
   * @param tickMs how often armed deadlines are checked (the most a deadline fires late)
   * @param now a monotonic clock, in milliseconds (a wall-clock step must not fire or hold back
   *   every armed deadline at once)
   */
  constructor(tickMs = 20, now: () => number = () => performance.now()) {
    this.#tickMs = tickMs;
    this.#now = now;
  }

  /**
   * Arms a deadline.
   * @param onExpire called once when the deadline passes, unless cancelled before
   * @returns cancels the deadline (idempotent)
   * @example
   * ```ts
   * const cancel = deadlines.arm(300, () => controller.abort());
   * try { await work(); } finally { cancel(); }
   * ```
   */
  arm(ms: number, onExpire: () => void): () => void {
    const entry = { at: this.#now() + ms, onExpire };
    this.#armed.add(entry);
    if (this.#timer === undefined) {
      const timer = setInterval(this.#sweep, this.#tickMs);
      if (this.#holding === 0) Deno.unrefTimer(timer);
      this.#timer = timer;
    }
    // The next tick that finds no deadline stops the timer, so requests that do not overlap do
    // not each start and clear an interval (docs/performance.md).
    return () => {
      this.#armed.delete(entry);
    };
  }

  /**
   * Bounds a promise in time without stopping its work: the answer is `work`'s, or a
   * {@linkcode DeadlineError} when `ms` pass first.
   * @param work what to wait for
   * @param ms the most to wait, in milliseconds
   * @param what names the work in the error message
   * @returns `work`'s result
   * @throws {DeadlineError} when the deadline passes first
   * @example
   * ```ts
   * const entry = await deadlines.within(kv.get(key), 250, "KV read");
   * ```
   */
  within<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#hold(1);
      let settled = false;
      const settle = () => {
        if (settled) return false;
        settled = true;
        this.#hold(-1);
        return true;
      };
      const cancel = this.arm(ms, () => {
        if (settle()) reject(new DeadlineError(what, ms));
      });
      work.then((value) => {
        cancel();
        if (settle()) resolve(value);
      }, (error) => {
        cancel();
        if (settle()) reject(error);
      });
    });
  }

  #hold(delta: number): void {
    this.#holding += delta;
    if (this.#timer === undefined) return;
    if (this.#holding > 0) Deno.refTimer(this.#timer);
    else Deno.unrefTimer(this.#timer);
  }

  /** How many deadlines are armed (for tests). */
  get size(): number {
    return this.#armed.size;
  }

  /** Whether the interval runs (for tests): from the first deadline until a tick finds none. */
  get running(): boolean {
    return this.#timer !== undefined;
  }

  #sweep = (): void => {
    const now = this.#now();
    for (const entry of this.#armed) {
      if (entry.at > now) continue;
      this.#armed.delete(entry);
      try {
        entry.onExpire();
      } catch {
        // One deadline's action must not stop the others.
      }
    }
    if (this.#armed.size === 0) this.#stop();
  };

  #stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }
}

/** Work bounded by {@linkcode DeadlineSweep.within} did not finish in time. */
export class DeadlineError extends Error {
  /** */
  constructor(what: string, ms: number) {
    super(`${what} took longer than ${ms} ms`);
    this.name = "DeadlineError";
  }
}
