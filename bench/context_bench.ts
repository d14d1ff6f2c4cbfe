/**
 * @module
 * Micro-benchmarks of the edge-reads building blocks: the context stage on a cache hit (against
 * a bare `Map` lookup and an uncached eventual KV read), and recommendation scoring.
 * Run with `deno task bench bench/context_bench.ts`.
 */
import { parseConfig } from "../lib/app/config.ts";
import { loadUserContext } from "../lib/pipeline/context.ts";
import { ContextCache } from "../lib/data/context_cache.ts";
import { recommend } from "../lib/data/recommend.ts";
import { type RelatedValue } from "../lib/data/store.ts";
import { readUserContext } from "../lib/data/readers.ts";
import { applyBackendEvents, applyOptionsFromConfig } from "../lib/sync/apply.ts";

const NOW = Date.UTC(2026, 10, 26, 12, 0, 0);
const USERS = 1000;
const config = parseConfig({ ORIGIN_URL: "http://127.0.0.1:1", CONTEXT_MAX_STALE_MS: "3600000" });
const kv = await Deno.openKv(":memory:");
const userIds = Array.from({ length: USERS }, (_, i) => `user-${i}`);
const iso = (ms: number) => new Date(ms).toISOString();

const events: unknown[] = [];
for (const userId of userIds) {
  for (let v = 0; v < 20; v++) {
    events.push({ kind: "view", userId, itemId: `p${(v * 7) % 97}`, at: iso(NOW - v * 60_000) });
  }
  events.push({ kind: "cart", userId, version: 1, at: iso(NOW), items: [{ itemId: "p1", qty: 1 }] });
  events.push({ kind: "profile", userId, version: 1, at: iso(NOW), segments: ["vip"], attributes: {} });
}
for (let i = 0; i < events.length; i += 1000) {
  await applyBackendEvents(kv, events.slice(i, i + 1000), applyOptionsFromConfig(config, NOW));
}

const cache = new ContextCache({ maxEntries: 10_000, maxBytes: 8 << 20, maxStaleMs: 3_600_000 });
for (const userId of userIds) await loadUserContext(userId, { kv, now: NOW, config, cache });
const plain = new Map(userIds.map((userId) => [userId, { userId }]));

let next = 0;
const nextUser = () => userIds[next++ % USERS]!;

Deno.bench("loadUserContext (cache hit)", { group: "context", baseline: true }, async () => {
  await loadUserContext(nextUser(), { kv, now: NOW, config, cache });
});
Deno.bench("Map.get (floor)", { group: "context" }, () => {
  plain.get(nextUser());
});
Deno.bench("readUserContext (KV, eventual, no cache)", { group: "context" }, async () => {
  await readUserContext(kv, nextUser(), NOW);
});

const views = Array.from({ length: 20 }, (_, i) => ({ itemId: `v${i}`, at: NOW - i * 3_600_000 }));
const related = new Map<string, RelatedValue>(views.map((view, i) => [view.itemId, {
  version: 1,
  related: Array.from(
    { length: 50 },
    (_, j) => ({ itemId: `r${(i * 13 + j * 7) % 400}`, score: 1 / (j + 1) }),
  ),
}]));

Deno.bench("recommend (20 views × 50 related, limit 10)", { group: "recommend", baseline: true }, () => {
  recommend({ recentViews: views, related, cartItemIds: ["r1", "r2"] }, { now: NOW, limit: 10 });
});
Deno.bench("recommend (5 views × 10 related, limit 10)", { group: "recommend" }, () => {
  recommend({
    recentViews: views.slice(0, 5),
    related: new Map(
      [...related].slice(0, 5).map(([k, v]) => [k, { ...v, related: v.related.slice(0, 10) }]),
    ),
  }, { now: NOW, limit: 10 });
});

globalThis.addEventListener("unload", () => kv.close());
