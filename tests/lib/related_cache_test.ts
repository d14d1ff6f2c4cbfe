import assert from "node:assert/strict";
import { RelatedCache } from "../../lib/related_cache.ts";
import { keys } from "../../lib/store.ts";

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
