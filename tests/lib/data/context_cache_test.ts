import assert from "node:assert/strict";
import { type CachedContext, ContextCache, estimateEntryBytes } from "../../../lib/data/context_cache.ts";
import type { UserContext } from "../../../lib/data/store.ts";

const T0 = Date.UTC(2026, 10, 26, 12, 0, 0);

function entry(storedAt: number, context: Partial<UserContext> = {}, absent = false): CachedContext {
  return {
    context: { recentViews: [], cart: undefined, profile: undefined, ...context },
    absent,
    storedAt,
    checkedAt: undefined,
    source: "kv",
    backend: "skipped",
  };
}

function views(n: number): UserContext["recentViews"] {
  return Array.from({ length: n }, (_, i) => ({ itemId: `item-${i}`, at: T0 - i }));
}

Deno.test("context cache serves an entry while it is younger than maxStaleMs", () => {
  const cache = new ContextCache({ maxEntries: 10, maxBytes: 1 << 20, maxStaleMs: 2000 });
  cache.set("u1", entry(T0, { recentViews: views(1) }));
  assert.equal(cache.get("u1", T0)?.fresh, true);
  assert.equal(cache.get("u1", T0 + 1999)?.fresh, true);
  const stale = cache.get("u1", T0 + 2000);
  assert.equal(stale?.fresh, false);
  assert.deepEqual(stale?.entry.context.recentViews, views(1));
  assert.equal(cache.get("u2", T0), undefined);
  assert.deepEqual(
    { hits: cache.stats().hits, misses: cache.stats().misses },
    { hits: 2, misses: 2 },
  );
});

Deno.test("context cache treats an entry from the future (clock went back) as stale", () => {
  const cache = new ContextCache({ maxEntries: 10, maxBytes: 1 << 20, maxStaleMs: 2000 });
  cache.set("u1", entry(T0 + 10_000));
  assert.equal(cache.get("u1", T0)?.fresh, false);
});

Deno.test("context cache with maxStaleMs 0 never reports an entry fresh", () => {
  const cache = new ContextCache({ maxEntries: 10, maxBytes: 1 << 20, maxStaleMs: 0 });
  cache.set("u1", entry(T0));
  assert.equal(cache.get("u1", T0)?.fresh, false);
});

Deno.test("context cache evicts the least recently used entry beyond maxEntries", () => {
  const cache = new ContextCache({ maxEntries: 3, maxBytes: 1 << 20, maxStaleMs: 2000 });
  cache.set("a", entry(T0));
  cache.set("b", entry(T0));
  cache.set("c", entry(T0));
  cache.get("a", T0); // "b" is now the least recently used
  cache.set("d", entry(T0));
  assert.equal(cache.peek("b"), undefined);
  for (const key of ["a", "c", "d"]) assert.ok(cache.peek(key), key);
  assert.equal(cache.stats().entries, 3);
  assert.equal(cache.stats().evictions, 1);
});

Deno.test("context cache evicts by estimated bytes and refuses an entry larger than maxBytes", () => {
  const big = entry(T0, { recentViews: views(20) });
  const size = estimateEntryBytes("a", big);
  const cache = new ContextCache({ maxEntries: 100, maxBytes: size * 2 + 10, maxStaleMs: 2000 });
  cache.set("a", big);
  cache.set("b", big);
  assert.equal(cache.stats().bytes, size * 2);
  cache.set("c", big);
  assert.equal(cache.stats().entries, 2);
  assert.equal(cache.peek("a"), undefined);
  assert.ok(cache.stats().bytes <= size * 2 + 10);

  const tiny = new ContextCache({ maxEntries: 100, maxBytes: 200, maxStaleMs: 2000 });
  assert.equal(tiny.set("a", big), false);
  assert.equal(tiny.stats().entries, 0);
  assert.equal(tiny.stats().bytes, 0);
});

Deno.test("context cache replacing an entry keeps the byte count exact", () => {
  const cache = new ContextCache({ maxEntries: 10, maxBytes: 1 << 20, maxStaleMs: 2000 });
  cache.set("a", entry(T0, { recentViews: views(10) }));
  cache.set("a", entry(T0, { recentViews: views(1) }));
  assert.equal(cache.stats().bytes, estimateEntryBytes("a", entry(T0, { recentViews: views(1) })));
  cache.invalidate("a");
  assert.equal(cache.stats().bytes, 0);
});

Deno.test("context cache counts negative hits for absent users", () => {
  const cache = new ContextCache({ maxEntries: 10, maxBytes: 1 << 20, maxStaleMs: 2000 });
  cache.set("ghost", entry(T0, {}, true));
  const lookup = cache.get("ghost", T0 + 1);
  assert.equal(lookup?.fresh, true);
  assert.equal(lookup?.entry.absent, true);
  assert.equal(cache.stats().negativeHits, 1);
});

Deno.test("context cache invalidation drops the entry at once", () => {
  const cache = new ContextCache({ maxEntries: 10, maxBytes: 1 << 20, maxStaleMs: 60_000 });
  cache.set("u1", entry(T0));
  assert.equal(cache.invalidate("u1"), true);
  assert.equal(cache.get("u1", T0), undefined);
  assert.equal(cache.invalidate("u1"), false);
  cache.set("u2", entry(T0));
  cache.set("u3", entry(T0));
  cache.invalidateMany(["u2", "u3"]);
  assert.equal(cache.stats().entries, 0);
  assert.equal(cache.stats().invalidations, 3);
});

Deno.test("context cache coalesces concurrent loads of one user into one", async () => {
  const cache = new ContextCache({ maxEntries: 10, maxBytes: 1 << 20, maxStaleMs: 2000 });
  let loads = 0;
  const { promise: gate, resolve: open } = Promise.withResolvers<void>();
  const load = async () => {
    loads++;
    await gate;
    return entry(T0, { recentViews: views(2) });
  };
  const all = Array.from({ length: 50 }, () => cache.coalesce("u1", load));
  open();
  const results = await Promise.all(all);
  assert.equal(loads, 1);
  assert.ok(results.every((result) => result === results[0]));
  assert.equal(cache.get("u1", T0)?.fresh, true);
  assert.equal(cache.stats().coalesced, 49);
});

Deno.test("context cache does not store a load that was invalidated while in flight", async () => {
  const cache = new ContextCache({ maxEntries: 10, maxBytes: 1 << 20, maxStaleMs: 2000 });
  const { promise: gate, resolve: open } = Promise.withResolvers<void>();
  const pending = cache.coalesce("u1", async () => {
    await gate;
    return entry(T0, { recentViews: views(1) });
  });
  // A sync for u1 is applied by this instance while the (older) read is in flight.
  assert.equal(cache.invalidate("u1"), true);
  open();
  const result = await pending;
  assert.equal(result.context.recentViews.length, 1);
  assert.equal(cache.peek("u1"), undefined);
  // A new load after the invalidation starts afresh.
  await cache.coalesce("u1", () => Promise.resolve(entry(T0, { recentViews: views(3) })));
  assert.equal(cache.peek("u1")?.context.recentViews.length, 3);
});

Deno.test("context cache rejects invalid bounds", () => {
  assert.throws(() => new ContextCache({ maxEntries: 0, maxBytes: 10, maxStaleMs: 0 }), RangeError);
  assert.throws(() => new ContextCache({ maxEntries: 1, maxBytes: 1.5, maxStaleMs: 0 }), RangeError);
  assert.throws(() => new ContextCache({ maxEntries: 1, maxBytes: 10, maxStaleMs: -1 }), RangeError);
});

Deno.test("context cache byte estimate counts the data held, not its JSON text", () => {
  const small = estimateEntryBytes("u1", entry(T0, { recentViews: views(1) }));
  const twenty = estimateEntryBytes("u1", entry(T0, { recentViews: views(20) }));
  // Each view is an object, a string and a boxed timestamp: about 100 bytes of heap, where its
  // JSON text is 30 characters.
  assert.ok((twenty - small) / 19 >= 100, `${(twenty - small) / 19} bytes per view`);
  const negative = estimateEntryBytes("u1", entry(T0, {}, true));
  assert.ok(negative >= 250, `a negative entry is still ${negative} bytes`);
  assert.ok(estimateEntryBytes("a-much-longer-user-id", entry(T0)) > estimateEntryBytes("u1", entry(T0)));
});
