import assert from "node:assert/strict";
import { estimateRelatedEntryBytes, RelatedCache } from "../../../lib/data/related_cache.ts";
import { keys } from "../../../lib/data/store.ts";
import { DeadlineError, DeadlineSweep } from "../../../lib/support/deadlines.ts";
import { stallingReads } from "../../support.ts";

Deno.test("related cache reads KV once per item while fresh, caches absence, and stays bounded", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    await kv.set(keys.related("p1"), { version: 1, related: [{ itemId: "p2", score: 0.5 }] });
    let reads = 0;
    const counting = new Proxy(kv, {
      get(target, prop) {
        if (prop === "getMany") reads++;
        const value = Reflect.get(target, prop);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    const cache = new RelatedCache({ maxEntries: 2, maxStaleMs: 1000 });
    const first = await cache.read(counting, ["p1", "p9"], 0);
    assert.deepEqual([...first.keys()], ["p1"]);
    assert.equal(reads, 1);
    await cache.read(counting, ["p1", "p9"], 500);
    assert.equal(reads, 1, "both the list and the absence are served from the cache");
    await cache.read(counting, ["p1"], 1000);
    assert.equal(reads, 2, "re-read once stale");
    await cache.read(counting, ["a", "b", "c"], 1000);
    assert.equal(cache.size, 2);
  } finally {
    kv.close();
  }
});

Deno.test("related cache is bounded in estimated bytes, so long lists cannot fill the isolate", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const long = {
      version: 1,
      related: Array.from({ length: 500 }, (_, i) => ({ itemId: `item-${i}`, score: i / 500 })),
    };
    for (const itemId of ["p1", "p2", "p3"]) await kv.set(keys.related(itemId), long);
    const one = estimateRelatedEntryBytes("p1", long);
    assert.ok(one > 500 * 64, `a 500-item list is estimated at ${one} bytes`);
    const cache = new RelatedCache({ maxEntries: 100, maxStaleMs: 1000, maxBytes: one * 2 });
    await cache.read(kv, ["p1", "p2", "p3"], 0);
    assert.equal(cache.size, 2);
    assert.ok(cache.bytes <= one * 2);
    assert.throws(() => new RelatedCache({ maxEntries: 1, maxStaleMs: 0, maxBytes: 0 }), RangeError);
  } finally {
    kv.close();
  }
});

Deno.test("related cache bounds only its KV reads: hits need no deadline, a stalled read gives up", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    await kv.set(keys.related("p1"), { version: 1, related: [{ itemId: "p2", score: 0.5 }] });
    const sweep = new DeadlineSweep(5);
    let bounded = 0;
    const kvWithin = <T>(read: Promise<T>) => {
      bounded++;
      return sweep.within(read, 30, "KV read");
    };
    const cache = new RelatedCache({ maxEntries: 10, maxStaleMs: 1000 });
    assert.deepEqual([...(await cache.read(kv, ["p1"], 0, kvWithin)).keys()], ["p1"]);
    await cache.read(kv, ["p1"], 500, kvWithin);
    assert.equal(bounded, 1, "a cache hit arms no deadline");
    const started = performance.now();
    await assert.rejects(cache.read(stallingReads(kv), ["p3"], 500, kvWithin), DeadlineError);
    assert.ok(performance.now() - started < 1000);
  } finally {
    kv.close();
  }
});
