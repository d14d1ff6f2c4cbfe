/**
 * @module
 * The bounded queue between the request path and delivery: pushing is synchronous and cheap, and
 * one background loop per isolate hands full or timed-out batches to the sender, one at a time.
 */
import type { DeadlineSweep } from "../support/deadlines.ts";
import type { ExposureEvent } from "./events.ts";
import type { DeliveryResult, OutgoingBatch } from "./sender.ts";

/** What the queue needs of a sender (`ExposureSender` fits). */
export interface BatchSender {
  /** Makes the signed message for some events. */
  batch(events: readonly ExposureEvent[]): OutgoingBatch;
  /** Delivers it, retrying as needed; never throws. */
  deliver(batch: OutgoingBatch): Promise<unknown>;
}

/** Options for {@linkcode ExposureQueue}. */
export interface ExposureQueueOptions {
  batchMax: number;
  /** `EXPOSURES_FLUSH_MS`: the longest the oldest waiting event waits for its batch to fill. */
  flushMs: number;
  bufferMax: number;
  sender: BatchSender;
  /** The timer for the flush wait (a pending wait keeps the process alive). */
  deadlines: DeadlineSweep;
  mono: () => number;
  /** Hands the delivery loop to the process, so it outlives the request and shutdown waits for it. */
  waitUntil: (work: Promise<unknown>) => void;
  /** Told of queued events and of events dropped from the queue (the sender reports the rest). */
  onResult?: (result: "queued" | DeliveryResult, events: number) => void;
  /** Told when the queue starts dropping events after it had room. */
  onFull?: () => void;
}

/** A bounded queue of exposure events with one delivery loop. */
export class ExposureQueue {
  readonly #options: ExposureQueueOptions;
  /** Queued events from `#head` on, with their arrival times (monotonic ms). */
  #events: ExposureEvent[] = [];
  #times: number[] = [];
  #head = 0;
  #inFlight: OutgoingBatch | undefined;
  #running: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  #closing = false;
  #full = false;

  constructor(options: ExposureQueueOptions) {
    for (const name of ["batchMax", "flushMs", "bufferMax"] as const) {
      if (!Number.isInteger(options[name]) || options[name] < 1) {
        throw new RangeError(`Exposure queue "${name}" must be a positive integer, got "${options[name]}"`);
      }
    }
    if (options.batchMax > options.bufferMax) {
      throw new RangeError(`Exposure queue "batchMax" must not exceed "bufferMax"`);
    }
    this.#options = options;
  }

  /** Events waiting for delivery: queued, and in the batch being delivered. */
  get size(): number {
    const inFlight = this.#inFlight;
    return this.#queued + (inFlight && !inFlight.abandoned ? inFlight.size : 0);
  }

  get #queued(): number {
    return this.#events.length - this.#head;
  }

  /** Queues an event, dropping the oldest first when full, and starts the delivery loop if idle. */
  push(event: ExposureEvent): void {
    const options = this.#options;
    if (this.size >= options.bufferMax) this.#makeRoom();
    this.#events.push(event);
    this.#times.push(options.mono());
    options.onResult?.("queued", 1);
    if (this.#queued >= options.batchMax) this.#wake?.();
    if (this.#running === undefined) {
      this.#running = this.#run();
      options.waitUntil(this.#running);
    }
  }

  /**
   * Sends what is queued without waiting for batches to fill (on shutdown); events pushed later
   * go out at once too. Settles once the last batch is delivered or dropped.
   */
  close(): Promise<void> {
    this.#closing = true;
    this.#wake?.();
    return this.#running ?? Promise.resolve();
  }

  // The oldest events go: the batch being delivered (a signed message is not cut), unless it was
  // already given up, and then the oldest queued event.
  #makeRoom(): void {
    if (!this.#full) {
      this.#full = true;
      this.#options.onFull?.();
    }
    const inFlight = this.#inFlight;
    if (inFlight && !inFlight.abandoned) {
      inFlight.abandon();
      return;
    }
    this.#head++;
    this.#options.onResult?.("dropped", 1);
    this.#compact();
  }

  async #run(): Promise<void> {
    const options = this.#options;
    try {
      while (this.#queued > 0) {
        if (!this.#closing && this.#queued < options.batchMax) {
          const waitMs = this.#times[this.#head]! + options.flushMs - options.mono();
          if (waitMs > 0) await this.#pause(waitMs);
          if (this.#queued === 0) break;
        }
        const events = this.#take(Math.min(options.batchMax, this.#queued));
        const batch = options.sender.batch(events);
        this.#inFlight = batch;
        try {
          await options.sender.deliver(batch);
        } finally {
          this.#inFlight = undefined;
        }
        if (this.size < options.bufferMax) this.#full = false;
      }
    } finally {
      this.#running = undefined;
    }
  }

  async #pause(ms: number): Promise<void> {
    const woken = new Promise<void>((resolve) => this.#wake = resolve);
    // The deadline firing is the usual end of the wait, not a failure.
    await this.#options.deadlines.within(woken, ms, "Exposure flush").catch(() => {});
    this.#wake = undefined;
  }

  #take(n: number): ExposureEvent[] {
    const events = this.#events.slice(this.#head, this.#head + n);
    this.#head += n;
    this.#compact();
    return events;
  }

  // Consumed entries are cut off once they are the larger part, so pushing and taking stay O(1)
  // amortised without a ring buffer's bookkeeping.
  #compact(): void {
    if (this.#head === this.#events.length) {
      this.#events = [];
      this.#times = [];
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > this.#events.length) {
      this.#events = this.#events.slice(this.#head);
      this.#times = this.#times.slice(this.#head);
      this.#head = 0;
    }
  }
}
