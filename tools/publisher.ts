/**
 * @module
 * The backend side of sync: reads events (NDJSON or from code), validates them against the
 * wire contract, batches them under the edge's limits, signs each batch the Standard Webhooks
 * way and fans it out to every edge endpoint, retrying on a Standard Webhooks-like schedule
 * with jitter, honouring `Retry-After` and 429, and giving up on an endpoint that answers 410
 * or that never answered while a batch used up the whole schedule on it.
 */
import { z } from "zod";
import { batchEvents, type BatchOptions, PublishInputError } from "./publisher_events.ts";
import { parseSyncEvent } from "../lib/sync/schema.ts";
import { sign } from "../lib/sync/verify.ts";
import { parseRetryAfter } from "../lib/http/retry_after.ts";

/**
 * Delay before each attempt, in ms: the Standard Webhooks schedule (immediately, 5 s, 5 min,
 * 30 min, 2 h, 5 h, 10 h, 10 h).
 */
export const STANDARD_RETRY_SCHEDULE_MS: readonly number[] = [
  0,
  5_000,
  300_000,
  1_800_000,
  7_200_000,
  18_000_000,
  36_000_000,
  36_000_000,
];

/** Options for {@linkcode publish}. */
export interface PublishOptions extends BatchOptions {
  /** Full URLs of the edge sync endpoints (`…/_edge/sync`). */
  endpoints: readonly string[];
  /** The `whsec_…` signing secret. */
  secret: string;
  fetch: typeof fetch;
  /** Wall clock, epoch ms (for `webhook-timestamp` and the envelope). */
  now: () => number;
  sleep: (ms: number) => Promise<void>;
  /** Uniform in [0, 1), for jitter. */
  random: () => number;
  /** Unique ids for `webhook-id`. */
  randomId: () => string;
  /** Delay before each attempt (its length is the number of attempts); default {@linkcode STANDARD_RETRY_SCHEDULE_MS}. */
  scheduleMs?: readonly number[];
  /** Jitter as a fraction of each delay, ± (default 0.2). */
  jitter?: number;
  /** Cap on a `Retry-After` wait (default 1 h). */
  maxRetryAfterMs?: number;
  /** Per-attempt timeout (default 30 s). */
  timeoutMs?: number;
  /** Told about each attempt's outcome, e.g. for progress logging. */
  onAttempt?: (attempt: AttemptInfo) => void;
}

/** One delivery attempt. */
export interface AttemptInfo {
  endpoint: string;
  webhookId: string;
  attempt: number;
  /** How many attempts the schedule allows in all. */
  attempts: number;
  /** HTTP status, or 0 for a network error or timeout. */
  status: number;
  outcome: "delivered" | "retry" | "failed" | "gone";
  /** The answer's body, or why there was none (`network error: connection refused`). */
  detail?: string;
  /** With `retry`: how long until the next attempt, in ms (jitter and `Retry-After` included). */
  nextAttemptInMs?: number;
}

/** The rule control events: the edge reports them apart, so they travel in batches of their own. */
const RULES_KINDS: ReadonlySet<string> = new Set(["rules", "rules_promote", "rules_rollback"]);

/** What the edge answered to a delivered batch (the 200 body of `POST /_edge/sync`). */
const SyncAnswer = z.union([
  z.object({ duplicate: z.literal(true) }),
  z.object({
    applied: z.number().int().nonnegative(),
    stale: z.number().int().nonnegative(),
    rules: z.object({
      active: z.number().int().nullable(),
      canary: z.object({ version: z.number().int(), share: z.number() }).nullable(),
    }).nullable().optional(),
  }),
]);

/** What the edge answered to a delivered batch. */
export type SyncAnswer = z.infer<typeof SyncAnswer>;

/** One batch at one endpoint. */
export interface BatchReport {
  webhookId: string;
  /** Events in the batch, by kind. */
  kinds: Record<string, number>;
  events: number;
  delivered: boolean;
  /**
   * The edge's answer when delivered: `applied`/`stale` (and, for rule control events, the rules
   * now active), or `duplicate` for a batch it had applied already. Absent when the answer was
   * not one of these (an older edge, or a proxy in between).
   */
  answer?: SyncAnswer;
  /** Why it was not delivered. */
  error?: string;
}

/** What happened at one endpoint. */
export interface EndpointReport {
  endpoint: string;
  deliveredBatches: number;
  deliveredEvents: number;
  /** Batches not delivered, including those never sent once the endpoint was given up. */
  failedBatches: number;
  failedEvents: number;
  /** The endpoint answered 410 and was given up. */
  gone: boolean;
  /**
   * One entry per failed batch: its webhook-id and the last error, or why it was not sent (the
   * endpoint answered 410, or an earlier batch used up every attempt on it without one HTTP answer).
   */
  errors: { webhookId: string; error: string }[];
  /** Every batch, in the order sent, with the edge's answer. */
  batches: BatchReport[];
}

/** The outcome of a publish. */
export interface PublishReport {
  /** Every batch reached every endpoint. */
  ok: boolean;
  endpoints: EndpointReport[];
}

/**
 * Publishes events to every endpoint: batches, signs and delivers with retries. Each endpoint
 * gets its batches in turn; once one batch has used up the whole retry schedule there without
 * any HTTP answer (every attempt a network error or timeout), or the endpoint answered 410, the
 * endpoint's remaining batches fail at once, unsent, with the reason — a dead endpoint costs one
 * schedule, not one per batch. An endpoint that answers (even 5xx to every attempt of one batch)
 * keeps getting its other batches: the failure may be that batch's alone.
 *
 * @param events valid events of the wire contract (see {@linkcode parseNdjson})
 * @param options endpoints, secret, side effects and retry policy
 * @returns per-endpoint delivered and failed counts
 * @throws {PublishInputError} when an event is invalid or too large, or the secret is not a `whsec_` secret
 * @example
 * ```ts
 * const report = await publish(events, {
 *   endpoints: ["https://edge.example/_edge/sync"], secret: "whsec_…", fetch, now: Date.now,
 *   sleep: (ms) => new Promise((r) => setTimeout(r, ms)), random: Math.random,
 *   randomId: () => crypto.randomUUID(),
 * });
 * ```
 */
export async function publish(events: readonly unknown[], options: PublishOptions): Promise<PublishReport> {
  await checkInput(events, options.secret);
  // The edge answers `applied`/`stale` per batch: with rule control events in batches of their
  // own, a stale count there says that a rules push, promote or rollback changed nothing.
  const isRules = (event: unknown) => RULES_KINDS.has(kindOf(event));
  const grouped = [
    ...batchEvents(events.filter((event) => !isRules(event)), options),
    ...batchEvents(events.filter(isRules), options),
  ];
  const batches = grouped.map((batch) => ({
    id: `msg_${options.randomId()}`,
    events: batch,
    body: JSON.stringify({
      type: "edge.sync",
      timestamp: new Date(options.now()).toISOString(),
      data: { events: batch },
    }),
  }));
  const endpoints = await Promise.all(
    options.endpoints.map((endpoint) => publishTo(endpoint, batches, options)),
  );
  return { ok: endpoints.every((report) => report.failedBatches === 0), endpoints };
}

/** Throws {@linkcode PublishInputError} unless the secret signs and every event is valid: no retry fixes those. */
async function checkInput(events: readonly unknown[], secret: string): Promise<void> {
  try {
    // A trial signature: a secret that decodes but cannot key an HMAC (`whsec_` alone) fails here.
    await sign(secret, { id: "msg_check", timestamp: 0, body: "" });
  } catch (error) {
    throw new PublishInputError("Cannot sign", [(error as Error).message]);
  }
  const problems: string[] = [];
  events.forEach((event, index) => {
    const result = parseSyncEvent(event);
    if ("problems" in result) {
      for (const problem of result.problems) {
        problems.push(`event ${index}: "${problem.field}" ${problem.message}`);
      }
    }
  });
  if (problems.length) throw new PublishInputError("Cannot publish the input", problems);
}

/** Sends the batches to one endpoint in order, giving up on it after a 410 or an unreachable batch. */
async function publishTo(
  endpoint: string,
  batches: { id: string; events: unknown[]; body: string }[],
  options: PublishOptions,
): Promise<EndpointReport> {
  const report: EndpointReport = {
    endpoint,
    deliveredBatches: 0,
    deliveredEvents: 0,
    failedBatches: 0,
    failedEvents: 0,
    gone: false,
    errors: [],
    batches: [],
  };
  const fail = (batch: { id: string; events: unknown[] }, error: string) => {
    report.failedBatches++;
    report.failedEvents += batch.events.length;
    report.errors.push({ webhookId: batch.id, error });
    report.batches.push({ ...batchSummary(batch), delivered: false, error });
  };
  // Why the endpoint's remaining batches are not sent, once it is given up.
  let givenUp: string | undefined;
  for (const batch of batches) {
    if (givenUp !== undefined) {
      fail(batch, givenUp);
      continue;
    }
    const outcome = await deliver(endpoint, batch, options);
    if (outcome.ok) {
      report.deliveredBatches++;
      report.deliveredEvents += batch.events.length;
      report.batches.push({ ...batchSummary(batch), delivered: true, answer: outcome.answer });
      continue;
    }
    fail(batch, outcome.error);
    if (outcome.gone) {
      report.gone = true;
      givenUp = "endpoint answered 410 Gone";
    } else if (outcome.unreachable) {
      givenUp = `not sent: batch ${batch.id} used up every attempt on this endpoint without an HTTP answer`;
    }
  }
  return report;
}

const RETRYABLE = new Set([408, 409, 425, 429]);

function kindOf(event: unknown): string {
  return event && typeof event === "object" && "kind" in event && typeof event.kind === "string"
    ? event.kind
    : "";
}

function batchSummary(batch: { id: string; events: unknown[] }): Omit<BatchReport, "delivered"> {
  const kinds: Record<string, number> = {};
  for (const event of batch.events) kinds[kindOf(event)] = (kinds[kindOf(event)] ?? 0) + 1;
  return { webhookId: batch.id, kinds, events: batch.events.length };
}

function parseAnswer(text: string): SyncAnswer | undefined {
  try {
    const parsed = SyncAnswer.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Names the cause of a failed `fetch` in a few words. Deno's own message is only "fetch
 * failed"; the cause (connection refused, DNS, reset) is in `error.cause`.
 *
 * @param error what `fetch` threw
 * @param timeoutMs the per-attempt timeout, for a timeout's message
 * @returns e.g. `connection refused`, `host not found (DNS)`, `no answer within 30 s`
 */
export function describeFetchError(error: unknown, timeoutMs: number): string {
  if (!(error instanceof Error)) return String(error);
  if (error.name === "TimeoutError") return `no answer within ${timeoutMs / 1000} s`;
  const cause = error.cause instanceof Error ? error.cause.message : "";
  const text = `${error.message} ${cause}`;
  if (/connection refused/i.test(text)) return "connection refused";
  if (/dns error|failed to lookup|name or service not known|no such host/i.test(text)) {
    return "host not found (DNS)";
  }
  if (/connection reset|connection closed before/i.test(text)) return "connection closed by the endpoint";
  if (/certificate|tls|ssl/i.test(text)) return `TLS error (${cause || error.message})`;
  // Deno's cause repeats the URL ("error sending request for url (…): …"): keep what follows.
  return cause.replace(/^error sending request[^:]*: /, "") || error.message;
}

async function deliver(
  endpoint: string,
  batch: { id: string; body: string },
  options: PublishOptions,
): Promise<
  { ok: true; answer: SyncAnswer | undefined } | {
    ok: false;
    gone: boolean;
    unreachable: boolean;
    error: string;
  }
> {
  const schedule = options.scheduleMs ?? STANDARD_RETRY_SCHEDULE_MS;
  const jitter = options.jitter ?? 0.2;
  const timeoutMs = options.timeoutMs ?? 30_000;
  let lastError = "no attempt was made";
  // Whether any attempt got an HTTP response: only an endpoint that never answered is dead.
  let answered = false;
  // The wait before each attempt, worked out when the one before it failed, so that its report
  // can say when the next attempt is.
  const waitBefore = (attempt: number, retryAfterMs: number) =>
    Math.max(schedule[attempt]! * (1 + (options.random() * 2 - 1) * jitter), retryAfterMs);
  let wait = schedule.length ? waitBefore(0, 0) : 0;
  for (let attempt = 0; attempt < schedule.length; attempt++) {
    if (wait > 0) await options.sleep(wait);
    const report = (
      info: Omit<AttemptInfo, "endpoint" | "webhookId" | "attempt" | "attempts">,
      retryAfterMs = 0,
    ) => {
      const retry = info.outcome === "retry" && attempt + 1 < schedule.length;
      if (retry) wait = waitBefore(attempt + 1, retryAfterMs);
      options.onAttempt?.({
        endpoint,
        webhookId: batch.id,
        attempt: attempt + 1,
        attempts: schedule.length,
        ...info,
        ...(retry ? { nextAttemptInMs: wait } : {}),
      });
    };
    const timestamp = Math.floor(options.now() / 1000);
    let response: Response;
    try {
      response = await options.fetch(endpoint, {
        method: "POST",
        body: batch.body,
        headers: {
          "content-type": "application/json",
          "webhook-id": batch.id,
          "webhook-timestamp": String(timestamp),
          "webhook-signature": await sign(options.secret, { id: batch.id, timestamp, body: batch.body }),
        },
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (error) {
      lastError = `network error: ${describeFetchError(error, timeoutMs)}`;
      report({ status: 0, outcome: "retry", detail: lastError });
      continue;
    }
    answered = true;
    const text = await response.text().catch(() => "");
    if (response.ok) {
      report({ status: response.status, outcome: "delivered", detail: text });
      return { ok: true, answer: parseAnswer(text) };
    }
    lastError = `HTTP ${response.status}: ${text.slice(0, 500)}`;
    if (response.status === 410) {
      report({ status: 410, outcome: "gone", detail: lastError });
      return { ok: false, gone: true, unreachable: false, error: lastError };
    }
    if (response.status < 500 && !RETRYABLE.has(response.status)) {
      report({ status: response.status, outcome: "failed", detail: lastError });
      return { ok: false, gone: false, unreachable: false, error: lastError };
    }
    const retryAfterMs = Math.min(
      parseRetryAfter(response.headers.get("retry-after"), options.now()),
      options.maxRetryAfterMs ?? 3_600_000,
    );
    report({ status: response.status, outcome: "retry", detail: lastError }, retryAfterMs);
  }
  // Every attempt of the schedule failed. Without a single HTTP answer (connection refused, DNS,
  // timeouts) the endpoint is down, not this batch; an endpoint that answered (a 503 for one
  // large batch, a 5xx bug on one batch) may still take the others.
  return {
    ok: false,
    gone: false,
    unreachable: !answered,
    error: `gave up after ${schedule.length} ${
      schedule.length === 1 ? "attempt" : "attempts"
    }; last: ${lastError}`,
  };
}
