/**
 * @module
 * Admission of sync pushes, so that they cannot exhaust the heap or hold the store: body bytes in
 * flight and slow bodies (bounded apart, as their senders are not yet authenticated), the apply
 * slots, and one time budget for a push's KV work.
 */
import type { Config } from "../app/config.ts";
import { BusyError, EdgeError } from "../http/errors.ts";
import { PayloadTooLargeError, readLimitedBody } from "../http/body.ts";
import { DeadlineError, type DeadlineSweep } from "../support/deadlines.ts";

/** The configured limits admission enforces. */
export type AdmissionLimits = Pick<
  Config,
  | "syncMaxBytes"
  | "syncMaxBytesInFlight"
  | "syncMinBodyBytesPerSec"
  | "syncBodyTimeoutMs"
  | "syncMaxConcurrent"
  | "syncStoreTimeoutMs"
>;

/** The clock and timeout mechanism admission runs on. */
export interface AdmissionClock {
  mono: () => number;
  deadlines: DeadlineSweep;
}

/** A push's KV steps, bounded together by one budget. */
export type StoreWithin = <T>(work: Promise<T>) => Promise<T>;

/** An admitted push: it holds an apply slot until {@linkcode AdmittedPush.release}. */
export interface AdmittedPush {
  /** Bounds a KV step by what is left of the push's `SYNC_STORE_TIMEOUT_MS` budget. */
  storeWithin: StoreWithin;
  /** Frees the slot; KV work still running keeps counting until it settles. */
  release(): void;
}

/** Abandoned pushes stop counting after this many store timeouts, so a dead store cannot block sync for good. */
const ABANDONED_FOR_TIMEOUTS = 6;

/** The shared admission state of one instance's sync route. */
export class SyncAdmission {
  #limits: AdmissionLimits;
  #clock: AdmissionClock;
  // Verified pushes being applied: each holds its body, the parsed JSON and the validated events.
  #ingesting = 0;
  // Body bytes reserved by pushes still being read (declared length, or SYNC_MAX_BYTES).
  #bytesInFlight = 0;
  // Pushes answered 503 whose KV work still runs and holds its batch.
  #abandoned = 0;

  constructor(limits: AdmissionLimits, clock: AdmissionClock) {
    this.#limits = limits;
    this.#clock = clock;
  }

  /** Refuses (413) a push whose declared length is over the limit, before anything else is done. */
  async refuseOversize(request: Request): Promise<void> {
    const declared = Number(request.headers.get("content-length"));
    if (Number.isFinite(declared) && declared > this.#limits.syncMaxBytes) {
      await request.body?.cancel().catch(() => {});
      throw new PayloadTooLargeError(this.#limits.syncMaxBytes);
    }
  }

  /**
   * Reads a push's body under the bytes-in-flight cap, the size limit, the body deadline and the
   * minimum rate (after a grace second, a body must have kept it up since it began).
   * @throws {BusyError} 429 when the bytes in flight would pass `SYNC_MAX_BYTES_IN_FLIGHT`
   * @throws {PayloadTooLargeError} 413 past `SYNC_MAX_BYTES`
   * @throws {EdgeError} 408 `body_timeout` or `body_too_slow`
   */
  async readBody(request: Request): Promise<Uint8Array> {
    const limits = this.#limits;
    const contentLength = request.headers.get("content-length");
    const declared = contentLength ? Number(contentLength) : NaN;
    const reserved = Number.isFinite(declared) && declared >= 0 ? declared : limits.syncMaxBytes;
    if (this.#bytesInFlight + reserved > limits.syncMaxBytesInFlight) {
      await request.body?.cancel().catch(() => {});
      throw new BusyError(
        `At most ${limits.syncMaxBytesInFlight} body bytes of pushes are read at once; retry after 1 s`,
        1,
      );
    }
    this.#bytesInFlight += reserved;
    const stopReading = new AbortController();
    let received = 0;
    const rateCheck = this.#watchRate(stopReading, () => received);
    const reading = readLimitedBody(request.body, {
      maxBytes: limits.syncMaxBytes,
      contentLength,
      signal: stopReading.signal,
      onRead: (total) => received = total,
    });
    try {
      return await this.#clock.deadlines.within(reading, limits.syncBodyTimeoutMs, "sync body");
    } catch (error) {
      if (!(error instanceof DeadlineError)) throw error;
      // Only the reader can cancel its locked stream; the reservation is kept until it has stopped.
      stopReading.abort(error);
      await reading.catch(() => {});
      throw new EdgeError(
        408,
        "body_timeout",
        `The body did not arrive within ${limits.syncBodyTimeoutMs} ms`,
      );
    } finally {
      clearInterval(rateCheck);
      this.#bytesInFlight -= reserved;
    }
  }

  #watchRate(stop: AbortController, received: () => number): ReturnType<typeof setInterval> | undefined {
    const minRate = this.#limits.syncMinBodyBytesPerSec;
    if (minRate <= 0) return undefined;
    const started = this.#clock.mono();
    return setInterval(() => {
      const elapsedSec = (this.#clock.mono() - started) / 1000;
      if (elapsedSec >= 1 && received() < minRate * elapsedSec) {
        stop.abort(new EdgeError(408, "body_too_slow", `The body arrived slower than ${minRate} bytes/s`));
      }
    }, 250);
  }

  /**
   * Gives a verified push an apply slot. Its KV work holds the slot too: the first store step
   * starts a budget of `SYNC_STORE_TIMEOUT_MS` that every later step gets the rest of, as an apply
   * is many commits that the caller cannot see one by one.
   * @throws {BusyError} 429 when `SYNC_MAX_CONCURRENT` pushes are applied or abandoned
   */
  admit(): AdmittedPush {
    const limits = this.#limits;
    if (this.#ingesting >= limits.syncMaxConcurrent || this.#abandoned >= limits.syncMaxConcurrent) {
      // Publishers retry; a Standard Webhooks sender honours Retry-After.
      throw new BusyError(
        `At most ${limits.syncMaxConcurrent} pushes are applied at once; retry after 1 s`,
        1,
      );
    }
    this.#ingesting++;
    const storeWork: Promise<unknown>[] = [];
    let storeSettled = 0;
    let storeDeadline: number | undefined;
    const storeWithin: StoreWithin = (work) => {
      storeWork.push(work);
      work.then(() => storeSettled++, () => storeSettled++);
      storeDeadline ??= this.#clock.mono() + limits.syncStoreTimeoutMs;
      const left = Math.max(0, storeDeadline - this.#clock.mono());
      return this.#clock.deadlines.within(work, left, "Sync store work");
    };
    const release = () => {
      this.#ingesting--;
      if (storeSettled < storeWork.length) this.#abandon(storeWork);
    };
    return { storeWithin, release };
  }

  /** Counts work cut off by the store deadline until it settles, or at most a few timeouts. */
  #abandon(storeWork: readonly Promise<unknown>[]): void {
    this.#abandoned++;
    let counted = true;
    const release = () => {
      if (counted) this.#abandoned--;
      counted = false;
    };
    Promise.allSettled(storeWork).then(release);
    Deno.unrefTimer(setTimeout(release, ABANDONED_FOR_TIMEOUTS * this.#limits.syncStoreTimeoutMs));
  }
}
