/**
 * @module
 * The one timeout mechanism: many deadlines on one interval timer that fires them at most a tick
 * late, runs only while any is armed, and keeps the process alive only while a `within` is awaited.
 */

/** A set of deadlines checked by one interval timer. */
export class DeadlineSweep {
  readonly #tickMs: number;
  readonly #now: () => number;
  readonly #armed = new Set<{ at: number; onExpire: () => void }>();
  #timer: ReturnType<typeof setInterval> | undefined;
  #holding = 0;

  /** `now` is monotonic: a wall-clock step must not fire or hold back every armed deadline at once. */
  constructor(tickMs = 20, now: () => number = () => performance.now()) {
    this.#tickMs = tickMs;
    this.#now = now;
  }

  /** Arms a deadline; `onExpire` runs once when it passes unless the returned cancel ran first. */
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
  constructor(what: string, ms: number) {
    super(`${what} took longer than ${ms} ms`);
    this.name = "DeadlineError";
  }
}
