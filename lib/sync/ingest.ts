/**
 * @module
 * One sync request from raw bytes to stored state: a size-limited body read, Standard Webhooks
 * verification of the raw bytes, parsing and all-or-nothing validation, idempotency by
 * `webhook-id` shared through KV by every instance, and the convergent apply.
 */
import type { SyncEvent } from "./schema.ts";
import { ClientClosedError, EdgeError, StoreUnavailableError } from "../http/errors.ts";
import { keys, parseStored } from "../data/store.ts";
import { z } from "zod";
import { applyEvents, type ApplyOptions, type ApplyResult } from "./apply.ts";
import { parseSyncPayload } from "./schema.ts";
import type { VerifiedWebhook, WebhookVerifier } from "./verify.ts";
import { readAtMost } from "../http/body.ts";

/** How long a claimed `webhook-id` blocks a concurrent delivery before it may be retried. */
const CLAIM_LEASE_MS = 60_000;
const MAX_WEBHOOK_ID_LENGTH = 256;

const WebhookRecord = z.object({ status: z.enum(["pending", "done"]), expiresAt: z.number() });

/** The request body is larger than allowed. */
export class PayloadTooLargeError extends EdgeError {
  /** @param maxBytes the limit */
  constructor(maxBytes: number) {
    super(413, "payload_too_large", `The body must be at most ${maxBytes} bytes`, { maxBytes });
    this.name = "PayloadTooLargeError";
  }
}

/**
 * Reads a request body into memory, refusing more than `maxBytes`: a declared
 * `Content-Length` above the limit is refused before reading, and a stream that turns out
 * longer is cancelled as soon as it passes the limit (the rest is never read).
 *
 * @param body the body stream (`null` reads as empty)
 * @param options the limit, the declared `Content-Length` header if any, a signal that
 *   stops the read (the stream is cancelled), and `onRead`, told the bytes read so far
 * @returns the body bytes
 * @throws {PayloadTooLargeError} when the body is or claims to be larger than the limit
 * @throws {ClientClosedError} when the body stream fails (the sender went away mid-body)
 * @throws the signal's reason when it aborted the read
 */
export async function readLimitedBody(
  body: ReadableStream<Uint8Array> | null,
  options: {
    maxBytes: number;
    contentLength?: string | null;
    signal?: AbortSignal;
    onRead?: (total: number) => void;
  },
): Promise<Uint8Array> {
  let bytes: Uint8Array | undefined;
  try {
    bytes = await readAtMost(body, options);
  } catch (error) {
    if (options.signal?.aborted) throw error;
    // The body stream only fails when the sender went away mid-body: not a server error.
    throw new ClientClosedError();
  }
  if (bytes === undefined) throw new PayloadTooLargeError(options.maxBytes);
  return bytes;
}

/** Options for {@linkcode ingestSync}. */
export interface IngestOptions {
  verifier: WebhookVerifier;
  /** The body's verification when the caller has already done it (then `verifier` is not asked again). */
  verified?: VerifiedWebhook;
  /** Timestamp tolerance; ids are remembered for twice this long. */
  toleranceSec: number;
  /** Apply options (clock, TTLs, `onApplied`). */
  apply: ApplyOptions;
  /** Told about the events of a batch once it has been applied (e.g. for sync-lag metrics). */
  onApplied?: (events: readonly SyncEvent[]) => void;
  /**
   * Bounds each KV step in time (claim, apply, record, release); the route gives every step of
   * one push the rest of one budget (`SYNC_STORE_TIMEOUT_MS`), so a hung store cannot hold the
   * push, and its concurrency slot, without limit. Past it the push is answered 503. Without it
   * the steps are not bounded.
   */
  storeWithin?: <T>(work: Promise<T>) => Promise<T>;
}

/** The answer to a sync request. */
export type IngestResult = ApplyResult | { duplicate: true };

/**
 * Verifies, validates and applies one signed sync request.
 *
 * @param kv the store (also holds the idempotency records)
 * @param request the raw body bytes and the request headers
 * @param options verifier, tolerance and apply options
 * @returns `{ applied, stale }`, or `{ duplicate: true }` for a `webhook-id` already applied
 * @throws {WebhookVerificationError} 401 for missing headers, bad timestamp or signature
 * @throws {SyncPayloadError} 400 for invalid JSON, envelope or events; 413 for too many events
 * @throws {EdgeError} 409 `in_progress` while another instance applies the same `webhook-id`
 * @throws {StoreUnavailableError} 503 when KV fails, or a step outlasts `storeWithin`
 */
export async function ingestSync(
  kv: Deno.Kv,
  request: { body: Uint8Array; headers: Headers },
  options: IngestOptions,
): Promise<IngestResult> {
  const { id } = options.verified ?? await options.verifier.verify(request.body, request.headers);
  if (id.length > MAX_WEBHOOK_ID_LENGTH) {
    throw new EdgeError(
      400,
      "invalid_webhook_id",
      `The webhook-id must be at most ${MAX_WEBHOOK_ID_LENGTH} characters`,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(request.body));
  } catch {
    throw new EdgeError(400, "invalid_json", "The body is not valid UTF-8 JSON");
  }
  const events = parseSyncPayload(json);
  const now = options.apply.now;
  const key = keys.webhook(id);
  // A step cut by its deadline is not undone: its KV work may still commit later. The contract
  // makes the publisher's retry of the 503 safe anyway: the apply is version-gated and
  // convergent (applying a batch again, or twice at once, ends in the same state), and a claim
  // that commits late only answers the retry 409 `in_progress` until its lease runs out.
  const within = options.storeWithin ?? ((work) => work);
  const claimed = await storeCall(() => within(claim(kv, key, now)));
  if (claimed === "done") return { duplicate: true };
  if (claimed === "pending") {
    throw new EdgeError(
      409,
      "in_progress",
      "This webhook-id is being applied by another request; retry later",
    );
  }
  let result: ApplyResult;
  try {
    result = await storeCall(() => within(applyEvents(kv, events, options.apply)));
  } catch (error) {
    // Release the claim so a retry can apply the batch; if KV is down the lease expires instead.
    // After a timeout the budget is spent: the delete is sent but not waited for.
    await Promise.try(() => within(kv.delete(key))).catch(() => {});
    throw error;
  }
  // As long as the push's timestamp can still be accepted: it may be up to the tolerance ahead of
  // this clock and is accepted until the tolerance after it, compared in whole seconds
  // (inclusive), hence the extra second, and one more for good measure.
  const rememberMs = 2 * options.toleranceSec * 1000 + 2000;
  // The batch is applied: failing to record the id only means a retry is applied again, which
  // the convergent apply makes harmless, so the publisher still gets its 200.
  await Promise.try(() =>
    within(kv.set(key, { status: "done", expiresAt: now + rememberMs }, { expireIn: rememberMs }))
  )
    .catch(() => {});
  options.onApplied?.(events);
  return result;
}

/**
 * Runs a KV operation; a failure that is not one of ours (a lost connection, a closed store, a
 * quota, a deadline passed) becomes a 503 `store_unavailable`, so the publisher retries instead
 * of seeing a 500.
 */
async function storeCall<T>(operation: () => Promise<T>): Promise<T> {
  try {
    return await operation();
  } catch (error) {
    if (error instanceof EdgeError) throw error;
    throw new StoreUnavailableError(error);
  }
}

async function claim(kv: Deno.Kv, key: Deno.KvKey, now: number): Promise<"claimed" | "pending" | "done"> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const entry = await kv.get(key);
    const record = parseStored(WebhookRecord, entry.value);
    if (record && record.expiresAt > now) return record.status;
    const result = await kv.atomic()
      .check({ key, versionstamp: entry.versionstamp })
      .set(key, { status: "pending", expiresAt: now + CLAIM_LEASE_MS }, { expireIn: CLAIM_LEASE_MS })
      .commit();
    if (result.ok) return "claimed";
  }
  return "pending";
}
