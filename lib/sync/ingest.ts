/**
 * @module
 * One sync push from request to stored state: admission, Standard Webhooks verification, all-or-
 * nothing validation, idempotency by `webhook-id` shared through KV, and the convergent apply.
 */
import type { SyncEvent } from "./schema.ts";
import type { Deps } from "../app/deps.ts";
import { EdgeError, StoreUnavailableError } from "../http/errors.ts";
import { keys, parseStored } from "../data/store.ts";
import { readStoredRulesStatus, type StoredRulesStatus } from "../rules/control.ts";
import { z } from "zod";
import { applyEvents, applyOptionsFromConfig, type ApplyResult } from "./apply.ts";
import type { ApplyOptions } from "./apply/unit.ts";
import { parseSyncPayload } from "./schema.ts";
import {
  checkWebhookHeaders,
  createWebhookVerifier,
  type VerifiedWebhook,
  type WebhookVerifier,
} from "./verify.ts";
import { type StoreWithin, SyncAdmission } from "./admission.ts";

/** How long a claimed `webhook-id` blocks a concurrent delivery before it may be retried. */
const CLAIM_LEASE_MS = 60_000;
const MAX_WEBHOOK_ID_LENGTH = 256;

const WebhookRecord = z.object({ status: z.enum(["pending", "done"]), expiresAt: z.number() });

/** Options for {@linkcode ingestSync}. */
export interface IngestOptions {
  verifier: WebhookVerifier;
  /** When the caller has already verified the body. */
  verified?: VerifiedWebhook;
  /** Ids are remembered for twice this long. */
  toleranceSec: number;
  apply: ApplyOptions;
  /** E.g. for sync-lag metrics. */
  onBatchApplied?: (events: readonly SyncEvent[]) => void;
  /** Bounds each KV step (claim, apply, record, release), so a hung store cannot hold the push. */
  storeWithin?: StoreWithin;
}

export type IngestResult = ApplyResult | { duplicate: true };

/**
 * Verifies, validates and applies one signed sync request; a `webhook-id` already applied is a duplicate.
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
  // A step cut by its deadline may still commit later; the retry of its 503 is safe anyway, as the
  // apply converges and a late claim only answers 409 `in_progress` until its lease runs out.
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
  // As long as the push's timestamp can be accepted either side, plus rounding and a margin.
  const rememberMs = 2 * options.toleranceSec * 1000 + 2000;
  // Failing to record the id only means a retry is applied again, harmlessly: still a 200.
  await Promise.try(() =>
    within(kv.set(key, { status: "done", expiresAt: now + rememberMs }, { expireIn: rememberMs }))
  )
    .catch(() => {});
  options.onBatchApplied?.(events);
  return result;
}

/** A KV failure not of ours (lost connection, quota, deadline) becomes a 503, which the publisher retries. */
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

export type ReceiverDeps = Pick<
  Deps,
  "config" | "kv" | "now" | "mono" | "deadlines" | "contextCache" | "sessionCache" | "metrics" | "log"
>;

/** The rules active after a batch with rule events; `null` when that read failed. */
export type RulesNow = Pick<StoredRulesStatus, "active" | "canary"> | null;

/** The answer to a push: with `rules` when the batch held rule control events. */
export type SyncAnswer = IngestResult | (ApplyResult & { rules: RulesNow });

/**
 * Receives signed pushes for one instance: admission (see `admission.ts`), verification, the
 * apply, and what this instance must forget or record because of it (caches, sync lag).
 */
export class SyncReceiver {
  #deps: ReceiverDeps;
  #admission: SyncAdmission;
  #verifier: Promise<WebhookVerifier> | undefined;

  constructor(deps: ReceiverDeps) {
    this.#deps = deps;
    this.#admission = new SyncAdmission(deps.config, deps);
  }

  /**
   * Admits, verifies and applies one push, in this order: a declared oversize (413), an unsigned or
   * stale push (401), the body read (429 bytes in flight, 413, 408), the signature (401), and only
   * then an apply slot (429), so that senders without the secret cannot hold the slots.
   * @throws {EdgeError} the refusals above, and those of {@linkcode ingestSync}
   */
  async receive(request: Request): Promise<SyncAnswer> {
    const { config, now } = this.#deps;
    const receivedAt = now();
    const toleranceSec = config.syncToleranceSec;
    await this.#admission.refuseOversize(request);
    checkWebhookHeaders(request.headers, { toleranceSec, now });
    const body = await this.#admission.readBody(request);
    const verifier = await this.#getVerifier();
    const verified = await verifier.verify(body, request.headers);
    const push = this.#admission.admit();
    try {
      const pushed = { body, headers: request.headers, receivedAt };
      return await this.#apply(pushed, { verifier, verified, storeWithin: push.storeWithin });
    } finally {
      push.release();
    }
  }

  async #apply(
    request: { body: Uint8Array; headers: Headers; receivedAt: number },
    { verifier, verified, storeWithin }: {
      verifier: WebhookVerifier;
      verified: VerifiedWebhook;
      storeWithin: StoreWithin;
    },
  ): Promise<SyncAnswer> {
    const deps = this.#deps;
    const now = request.receivedAt;
    let rulesEvents = false;
    const result = await ingestSync(deps.kv, request, {
      verifier,
      verified,
      toleranceSec: deps.config.syncToleranceSec,
      storeWithin,
      apply: applyOptionsFromConfig(deps.config, now, {
        onUsersChanged: (userIds) => {
          // This instance's cache must not serve what the batch just replaced.
          deps.contextCache.invalidateMany(userIds);
          deps.sessionCache.invalidateUsers(userIds);
        },
      }),
      onBatchApplied: (events) => {
        rulesEvents = events.some((event) =>
          event.kind === "rules" || event.kind === "rules_promote" || event.kind === "rules_rollback"
        );
        const lagsMs: number[] = [];
        for (const event of events) {
          if ("at" in event && typeof event.at === "number") lagsMs.push(now - event.at);
        }
        deps.metrics.observeSync({ lagsMs });
      },
    });
    if (!rulesEvents || "duplicate" in result) return result;
    return { ...result, rules: await this.#rulesNow(storeWithin) };
  }

  /** Built on the first push, then shared; a failure surfaces on that push and the next one retries. */
  #getVerifier(): Promise<WebhookVerifier> {
    const { config, now } = this.#deps;
    return this.#verifier ??= createWebhookVerifier(config.syncSecrets, {
      toleranceSec: config.syncToleranceSec,
      now,
    })
      .catch((error) => {
        this.#verifier = undefined;
        throw error;
      });
  }

  // The rules after the batch, for the publisher to show; `null` when that read fails, as the
  // batch itself has been applied and recorded (a 503 would only make its retry a duplicate).
  async #rulesNow(storeWithin: StoreWithin): Promise<RulesNow> {
    try {
      const { active, canary } = await storeWithin(readStoredRulesStatus(this.#deps.kv));
      return { active, canary };
    } catch (error) {
      this.#deps.log.warn("sync: rules state not read after apply", { error: String(error) });
      return null;
    }
  }
}
