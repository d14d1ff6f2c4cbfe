/**
 * @module
 * Sync ingest throughput: batches of 500 `view` events through the convergent apply path,
 * compared in the same run with raw batched `kv.atomic().set()` writes of the same views
 * (the baseline), for two shapes: views spread over 50 users, and 500 distinct users per batch.
 * The target is that ingest runs at ≥ 0.4× the raw throughput in both: each group's summary
 * prints "raw … N× faster than …", so the ratio is 1 / N (or N when it says "slower"). Two
 * ingest variants: `applyEvents` alone, and `signed ingestSync`, the whole edge side of a signed
 * push but HTTP (signature, JSON and schema validation, idempotency, apply).
 *
 * Both stores are first filled with the same number of batches, so that every user already
 * holds more than `RECENT_VIEWS_MAX` views and apply writes into a filled store, not an empty
 * one. Apply compacts no views but those of erased users (none here): the views beyond the newest
 * `RECENT_VIEWS_MAX` items are deleted after a read of the user, in the background (`lib/pipeline/context.ts`,
 * not timed here), so this store keeps every view written, as it does for users never read.
 *
 * ```sh
 * deno bench bench/sync_bench.ts
 * ```
 */
import { applyEvents } from "../lib/sync/apply.ts";
import type { ApplyOptions } from "../lib/sync/apply/unit.ts";
import { ingestSync } from "../lib/sync/ingest.ts";
import { createWebhookVerifier, sign } from "../lib/sync/verify.ts";
import { parseSyncPayload, type SyncEvent, type ViewEvent } from "../lib/sync/schema.ts";
import { planViewWrites } from "../lib/sync/views.ts";

const DAY = 86_400_000;
const T0 = Date.UTC(2026, 10, 26, 0, 0, 0);
const OPTIONS: ApplyOptions = {
  now: T0,
  recentViewsMax: 20,
  viewTtlMs: 30 * DAY,
  cartTtlMs: 30 * DAY,
  profileTtlMs: 30 * DAY,
  tombstoneTtlMs: 30 * DAY,
};
const BATCH = 500;

/** 500 views spread over `users` users, all newer than any earlier batch so each one writes. */
function viewBatch(round: number, users: number): SyncEvent[] {
  return Array.from({ length: BATCH }, (_, i) => ({
    kind: "view" as const,
    userId: `user-${i % users}`,
    itemId: `item-${(round * 7 + i) % 1000}`,
    at: T0 + round * BATCH + i,
  }));
}

async function rawWrite(kv: Deno.Kv, events: SyncEvent[]): Promise<void> {
  const op = kv.atomic();
  for (const event of events) {
    if (event.kind !== "view") continue;
    op.set(["bench", event.userId, event.itemId], { at: event.at, expiresAt: event.at + OPTIONS.viewTtlMs }, {
      expireIn: OPTIONS.viewTtlMs,
    });
  }
  const result = await op.commit();
  if (!result.ok) throw new Error("raw commit failed");
}

/** Batches written to each store before measuring (the 500-user shape needs > 20 per user). */
const WARM_BATCHES = 60;

const SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const verifier = await createWebhookVerifier([SECRET], { toleranceSec: 300, now: Date.now });
let deliveries = 0;

for (const users of [50, 500]) {
  const signedKv = await Deno.openKv(":memory:");
  let signedRound = 0;
  for (; signedRound < WARM_BATCHES; signedRound++) {
    await applyEvents(signedKv, viewBatch(signedRound, users), OPTIONS);
  }
  const applyKv = await Deno.openKv(":memory:");
  const rawKv = await Deno.openKv(":memory:");
  let applyRound = 0;
  let rawRound = 0;
  for (; applyRound < WARM_BATCHES; applyRound++) {
    await applyEvents(applyKv, viewBatch(applyRound, users), OPTIONS);
  }
  for (; rawRound < WARM_BATCHES; rawRound++) await rawWrite(rawKv, viewBatch(rawRound, users));
  const group = `500 views over ${users} users`;
  Deno.bench({ name: `raw kv.atomic().set() (${users} users)`, group, baseline: true }, async () => {
    await rawWrite(rawKv, viewBatch(rawRound++, users));
  });
  Deno.bench({ name: `applyEvents (${users} users)`, group }, async () => {
    const result = await applyEvents(applyKv, viewBatch(applyRound++, users), OPTIONS);
    if (result.applied === 0) throw new Error("nothing applied");
  });
  // The whole edge side of a push but HTTP: signature check, JSON and schema validation,
  // idempotency claim, apply, id record. Signing (the publisher's work) is not timed.
  Deno.bench({ name: `signed ingestSync (${users} users)`, group }, async (b) => {
    const body = new TextEncoder().encode(JSON.stringify({
      type: "edge.sync",
      timestamp: new Date().toISOString(),
      data: {
        events: viewBatch(signedRound++, users).map((e) => ({
          ...e,
          at: new Date((e as { at: number }).at).toISOString(),
        })),
      },
    }));
    const id = `msg_bench_${++deliveries}`;
    const timestamp = Math.floor(Date.now() / 1000);
    const headers = new Headers({
      "webhook-id": id,
      "webhook-timestamp": String(timestamp),
      "webhook-signature": await sign(SECRET, { id, timestamp, body }),
    });
    b.start();
    const result = await ingestSync(signedKv, { body, headers }, {
      verifier,
      toleranceSec: 300,
      apply: OPTIONS,
    });
    b.end();
    if ("duplicate" in result || result.applied === 0) throw new Error("nothing applied");
  });
}

// The parts of an ingest that are not KV: validating a pushed batch, and planning one user's
// view writes (the merge: newest view per item, at most RECENT_VIEWS_MAX, erased and expired out).
const wire = JSON.stringify({
  type: "edge.sync",
  timestamp: new Date(T0).toISOString(),
  data: {
    events: viewBatch(0, 500).map((event) => ({
      ...event,
      at: new Date((event as { at: number }).at).toISOString(),
    })),
  },
});
Deno.bench("validate a 500-event batch (JSON.parse + schema)", {
  group: "validation and merge",
  baseline: true,
}, () => {
  parseSyncPayload(JSON.parse(wire));
});
const oneUser = viewBatch(0, 1) as ViewEvent[];
Deno.bench("merge 500 views of one user (planViewWrites)", { group: "validation and merge" }, () => {
  planViewWrites("user-0", oneUser, { ...OPTIONS, erasedAt: -Infinity });
});
