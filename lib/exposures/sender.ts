/**
 * @module
 * Delivery of exposure batches: each one Standard Webhooks message posted to `EXPOSURES_URL`.
 * Network errors, timeouts, 5xx, 408 and 429 are retried with backoff and jitter (at most 5 s
 * apart) under the same `webhook-id`, so the backend can dedupe; any other non-2xx drops it.
 */
import type { DeadlineSweep } from "../support/deadlines.ts";
import type { Logger } from "../obs/log.ts";
import { parseRetryAfter } from "../http/retry_after.ts";
import { createSigner, type SignedMessage } from "../sync/verify.ts";
import type { ExposureEvent } from "./events.ts";

export const EXPOSURES_EVENT_TYPE = "edge.exposures";
/** The most time between two attempts at one batch. */
export const RETRY_MAX_MS = 5000;
const RETRY_BASE_MS = 250;
const ATTEMPT_TIMEOUT_MS = 10_000;
const encoder = new TextEncoder();

/** What happened to some events: counted in `edge_exposure_events_total{result}`. */
export type DeliveryResult = "sent" | "retried" | "dropped";

/** One signed message: id and body are fixed when made, so every retry sends the same bytes. */
export class OutgoingBatch {
  /** The `webhook-id`. */
  readonly id: string;
  readonly body: Uint8Array<ArrayBuffer>;
  /** Events carried. */
  readonly size: number;
  #abandoned = false;
  #wake: (() => void) | undefined;

  constructor(message: { id: string; body: Uint8Array<ArrayBuffer>; size: number }) {
    this.id = message.id;
    this.body = message.body;
    this.size = message.size;
  }

  get abandoned(): boolean {
    return this.#abandoned;
  }

  /** Gives the batch up: no attempt after the one under way, and a retry wait ends now. */
  abandon(): void {
    this.#abandoned = true;
    this.#wake?.();
  }

  /** Waits `ms` before the next attempt; {@linkcode OutgoingBatch.abandon} ends the wait early. */
  async pause(ms: number, deadlines: DeadlineSweep): Promise<void> {
    if (this.#abandoned) return;
    const woken = new Promise<void>((resolve) => this.#wake = resolve);
    await deadlines.within(woken, ms, "Exposure retry wait").catch(() => {});
    this.#wake = undefined;
  }
}

/** Options for {@linkcode ExposureSender}. */
export interface ExposureSenderOptions {
  url: URL;
  secret: string;
  fetch: typeof fetch;
  now: () => number;
  randomId: () => string;
  /** For jitter. */
  random: () => number;
  deadlines: DeadlineSweep;
  log: Logger;
  onResult?: (result: DeliveryResult, events: number) => void;
  /** Default 250; tests shorten it. */
  retryBaseMs?: number;
  /** Default 10 000. */
  attemptTimeoutMs?: number;
}

type Attempt =
  | { outcome: "sent" }
  | { outcome: "retry"; detail: string; retryAfterMs: number }
  | { outcome: "refused"; status: number };

/** Signs and posts exposure batches, retrying as the module says. */
export class ExposureSender {
  readonly #options: ExposureSenderOptions;
  #signer: ((message: SignedMessage) => string) | undefined;

  constructor(options: ExposureSenderOptions) {
    this.#options = options;
  }

  /** Makes the message for some events: `{ type, timestamp, data: { exposures } }`. */
  batch(events: readonly ExposureEvent[]): OutgoingBatch {
    const body = JSON.stringify({
      type: EXPOSURES_EVENT_TYPE,
      timestamp: new Date(this.#options.now()).toISOString(),
      data: { exposures: events },
    });
    return new OutgoingBatch({
      id: `msg_${this.#options.randomId()}`,
      body: encoder.encode(body),
      size: events.length,
    });
  }

  /**
   * Delivers a batch, retried until the backend takes or refuses it or the batch is given up
   * ({@linkcode OutgoingBatch.abandon}); never throws.
   */
  async deliver(batch: OutgoingBatch): Promise<"sent" | "dropped"> {
    const { log, onResult } = this.#options;
    const base = this.#options.retryBaseMs ?? RETRY_BASE_MS;
    for (let attempt = 1;; attempt++) {
      const result = await this.#attempt(batch);
      if (result.outcome === "sent") {
        onResult?.("sent", batch.size);
        return "sent";
      }
      const fields = { webhookId: batch.id, events: batch.size, attempt };
      if (result.outcome === "refused") {
        log.error("exposure batch refused by the backend; dropped", { ...fields, status: result.status });
        onResult?.("dropped", batch.size);
        return "dropped";
      }
      if (batch.abandoned) return this.#dropAbandoned(batch, attempt);
      log.warn("exposure batch not delivered; will retry", { ...fields, error: result.detail });
      onResult?.("retried", batch.size);
      // Equal jitter: half the exponential delay, plus up to as much again at random.
      const exponential = Math.min(RETRY_MAX_MS, base * 2 ** (attempt - 1));
      const jittered = exponential / 2 + (exponential / 2) * this.#options.random();
      await batch.pause(
        Math.min(RETRY_MAX_MS, Math.max(jittered, result.retryAfterMs)),
        this.#options.deadlines,
      );
      if (batch.abandoned) return this.#dropAbandoned(batch, attempt);
    }
  }

  #dropAbandoned(batch: OutgoingBatch, attempts: number): "dropped" {
    this.#options.log.warn("exposure buffer full: undelivered batch dropped", {
      webhookId: batch.id,
      events: batch.size,
      attempts,
    });
    this.#options.onResult?.("dropped", batch.size);
    return "dropped";
  }

  #sign(message: SignedMessage): string {
    this.#signer ??= createSigner(this.#options.secret);
    return this.#signer(message);
  }

  async #attempt(batch: OutgoingBatch): Promise<Attempt> {
    const { deadlines, now } = this.#options;
    const controller = new AbortController();
    const cancel = deadlines.arm(
      this.#options.attemptTimeoutMs ?? ATTEMPT_TIMEOUT_MS,
      () => controller.abort(new Error("timed out")),
    );
    try {
      const timestamp = Math.floor(now() / 1000);
      const response = await this.#options.fetch(this.#options.url, {
        method: "POST",
        body: batch.body,
        headers: {
          "content-type": "application/json",
          "webhook-id": batch.id,
          "webhook-timestamp": String(timestamp),
          "webhook-signature": this.#sign({ id: batch.id, timestamp, body: batch.body }),
        },
        // A redirect is not followed: signed analytics data goes where it was configured to.
        redirect: "manual",
        signal: controller.signal,
      });
      await response.body?.cancel().catch(() => {});
      const status = response.status;
      if (status >= 200 && status < 300) return { outcome: "sent" };
      if (status >= 500 || status === 408 || status === 429) {
        return {
          outcome: "retry",
          detail: `HTTP ${status}`,
          retryAfterMs: parseRetryAfter(response.headers.get("retry-after"), now()),
        };
      }
      return { outcome: "refused", status };
    } catch (error) {
      const detail = controller.signal.aborted ? "timed out" : `network error: ${(error as Error).message}`;
      return { outcome: "retry", detail, retryAfterMs: 0 };
    } finally {
      cancel();
    }
  }
}
