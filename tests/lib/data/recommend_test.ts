import assert from "node:assert/strict";
import { parseConfig } from "../../../lib/app/config.ts";
import {
  checkLimit,
  loadRecommendations,
  MAX_RECOMMENDATIONS,
  recommend,
} from "../../../lib/data/recommend.ts";
import type { RelatedValue } from "../../../lib/data/store.ts";
import { applyBackendEvents, applyOptionsFromConfig } from "../../../lib/sync/apply.ts";

const NOW = Date.UTC(2026, 10, 26, 12, 0, 0);
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

function related(entries: Record<string, Record<string, number>>): Map<string, RelatedValue> {
  return new Map(
    Object.entries(entries).map(([itemId, list]) => [
      itemId,
      { version: 1, related: Object.entries(list).map(([id, score]) => ({ itemId: id, score })) },
    ]),
  );
}

Deno.test("recommend weighs each view by recency (half-life) and sums over views", () => {
  const result = recommend({
    recentViews: [{ itemId: "new", at: NOW }, { itemId: "old", at: NOW - DAY }],
    related: related({ new: { a: 0.5, b: 0.4 }, old: { a: 0.6, c: 1.0 } }),
  }, { now: NOW });
  // a = 1·0.5 + ½·0.6 = 0.8; c = ½·1.0 = 0.5; b = 1·0.4 = 0.4
  assert.deepEqual(result, [
    { itemId: "a", score: 0.8, because: ["new", "old"] },
    { itemId: "c", score: 0.5, because: ["old"] },
    { itemId: "b", score: 0.4, because: ["new"] },
  ]);
});

Deno.test("recommend never suggests cart items, viewed items or excluded items", () => {
  const result = recommend({
    recentViews: [{ itemId: "p1", at: NOW }, { itemId: "p2", at: NOW - HOUR }],
    related: related({ p1: { p2: 0.9, cartItem: 0.9, page: 0.9, ok: 0.1 } }),
    cartItemIds: ["cartItem"],
  }, { now: NOW, exclude: ["page"] });
  assert.deepEqual(result.map((r) => r.itemId), ["ok"]);
});

Deno.test("recommend breaks ties by item id and is deterministic", () => {
  const input = {
    recentViews: [{ itemId: "v", at: NOW }],
    related: related({ v: { zeta: 0.5, alpha: 0.5, mid: 0.5, top: 0.7 } }),
  };
  const first = recommend(input, { now: NOW });
  assert.deepEqual(first.map((r) => r.itemId), ["top", "alpha", "mid", "zeta"]);
  assert.deepEqual(recommend(input, { now: NOW }), first);
});

Deno.test("recommend ignores non-positive and non-finite scores and duplicate views", () => {
  const result = recommend({
    recentViews: [{ itemId: "v", at: NOW - DAY }, { itemId: "v", at: NOW }],
    related: related({ v: { neg: -1, zero: 0, inf: Infinity, fine: 0.3 } }),
  }, { now: NOW });
  assert.deepEqual(result, [{ itemId: "fine", score: 0.3, because: ["v"] }]);
});

Deno.test("recommend respects the limit and is empty but valid when nothing is known", () => {
  const many = Object.fromEntries(
    Array.from({ length: 80 }, (_, i) => [`i${String(i).padStart(2, "0")}`, 1 - i / 100]),
  );
  const input = { recentViews: [{ itemId: "v", at: NOW }], related: related({ v: many }) };
  assert.equal(recommend(input, { now: NOW }).length, 10);
  assert.equal(recommend(input, { now: NOW, limit: 3 }).length, 3);
  assert.equal(recommend(input, { now: NOW, limit: MAX_RECOMMENDATIONS }).length, 50);
  assert.deepEqual(recommend({ recentViews: [], related: new Map() }, { now: NOW }), []);
  assert.deepEqual(
    recommend({ recentViews: [{ itemId: "v", at: NOW }], related: new Map() }, { now: NOW }),
    [],
  );
  assert.throws(() => checkLimit(0), RangeError);
  assert.throws(() => checkLimit(51), RangeError);
  assert.throws(() => checkLimit(2.5), RangeError);
  assert.equal(checkLimit(undefined), 10);
});

Deno.test("a future view weighs like a view just now", () => {
  const result = recommend({
    recentViews: [{ itemId: "v", at: NOW + DAY }],
    related: related({ v: { a: 0.5 } }),
  }, { now: NOW, halfLifeMs: HOUR });
  assert.equal(result[0]?.score, 0.5);
});

Deno.test("loadRecommendations reads the pushed related lists from KV", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const config = parseConfig({ ORIGIN_URL: "http://127.0.0.1:1" });
    await applyBackendEvents(kv, [
      {
        kind: "related",
        itemId: "p1",
        version: 1,
        related: [{ itemId: "p7", score: 0.8 }, { itemId: "p8", score: 0.2 }],
      },
      { kind: "related", itemId: "p2", version: 1, related: [{ itemId: "p8", score: 0.9 }] },
    ], applyOptionsFromConfig(config, NOW));
    const views = [{ itemId: "p2", at: NOW }, { itemId: "p1", at: NOW - DAY }, {
      itemId: "p3",
      at: NOW - DAY,
    }];
    const result = await loadRecommendations(kv, views, { now: NOW, cartItemIds: [] });
    // p8 = 1·0.9 + ½·0.2 = 1.0; p7 = ½·0.8 = 0.4
    assert.deepEqual(result.map((r) => [r.itemId, r.score]), [["p8", 1], ["p7", 0.4]]);
    assert.deepEqual(await loadRecommendations(kv, [], { now: NOW }), []);
    const cartExcluded = await loadRecommendations(kv, views, { now: NOW, cartItemIds: ["p8"] });
    assert.deepEqual(cartExcluded.map((r) => r.itemId), ["p7"]);
  } finally {
    kv.close();
  }
});
