import assert from "node:assert/strict";
import { Lru } from "../../../lib/data/lru.ts";

Deno.test("lru evicts the least recently used entry, a get counting as use and a peek not", () => {
  const lru = new Lru<string, number>({ maxEntries: 2 });
  lru.set("a", 1);
  lru.set("b", 2);
  assert.equal(lru.get("a"), 1);
  assert.equal(lru.peek("b"), 2);
  lru.set("c", 3);
  assert.deepEqual([...lru.entries()], [["a", 1], ["c", 3]]);
  assert.equal(lru.evictions, 1);
});

Deno.test("lru bounds estimated bytes and refuses an entry larger than the bound alone", () => {
  const lru = new Lru<string, string>({ maxEntries: 10, maxBytes: 100 });
  assert.ok(lru.set("a", "x", 60));
  assert.ok(lru.set("b", "y", 30));
  assert.ok(lru.set("c", "z", 20));
  assert.deepEqual([[...lru.entries()].map(([key]) => key), lru.bytes], [["b", "c"], 50]);
  assert.equal(lru.set("b", "huge", 101), false);
  assert.deepEqual([[...lru.entries()].map(([key]) => key), lru.bytes], [["c"], 20]);
  lru.clear();
  assert.deepEqual([lru.size, lru.bytes, lru.evictions], [0, 0, 1]);
});

Deno.test("lru rejects bounds that are not positive", () => {
  assert.throws(() => new Lru({ maxEntries: 0 }), RangeError);
  assert.throws(() => new Lru({ maxEntries: 1, maxBytes: 0 }), RangeError);
});
